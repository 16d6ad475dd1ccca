"""Framed sections on the L1 data channel (written by guests/l1/kvmcap.c).

::

    @@BEGIN NAME
    ...payload lines...
    @@END NAME lines=N crc=XXXXXXXX

``crc`` is zlib's CRC-32 of the payload lines, each followed by ``"\\n"``;
``N`` the number of payload lines.  A tty may add ``"\\r"``; it is stripped.
:class:`FrameReader` is fed bytes as they arrive and yields complete
:class:`Frame` values; inside a section only its own ``@@END`` line ends it
(an L2 transcript may contain anything, even ``@@BEGIN``); a section whose
count or CRC does not match raises :class:`FrameError`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from ..errors import RigError

_BEGIN = re.compile(r"^@@BEGIN (\S+)$")
_END = re.compile(r"^@@END (\S+) lines=(\d+) crc=([0-9A-Fa-f]{8})$")


class FrameError(RigError):
    pass


@dataclass(frozen=True)
class Frame:
    name: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


class FrameReader:
    """Incremental parser: ``feed(bytes) -> list[Frame]``."""

    def __init__(self) -> None:
        self._buf = b""
        self._name: str | None = None
        self._lines: list[str] = []
        self._raw: list[bytes] = []
        #: lines seen outside any frame (should be none; kept for error messages)
        self.noise: list[str] = []

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                return out
            raw, self._buf = self._buf[:nl].rstrip(b"\r"), self._buf[nl + 1 :]
            frame = self._line(raw)
            if frame is not None:
                out.append(frame)

    def _line(self, raw: bytes) -> Frame | None:
        line = raw.decode("utf-8", "replace")
        m = _BEGIN.match(line)
        if m and self._name is None:
            self._name, self._lines, self._raw = m.group(1), [], []
            return None
        m = _END.match(line)
        if m and self._name is not None and m.group(1) == self._name:
            name, n, crc = m.group(1), int(m.group(2)), int(m.group(3), 16)
            lines, raws, self._name = self._lines, self._raw, None
            if n != len(lines):
                raise FrameError(f"L1 data channel: section {name!r} has {len(lines)} lines, its trailer says {n}")
            got = zlib.crc32(b"".join(r + b"\n" for r in raws)) & 0xFFFFFFFF
            if got != crc:
                raise FrameError(f"L1 data channel: section {name!r} fails its CRC ({got:08X} != {crc:08X})")
            return Frame(name, tuple(lines))
        if self._name is not None:
            self._lines.append(line)
            self._raw.append(raw)
        elif line.strip():
            self.noise.append(line)
        return None
