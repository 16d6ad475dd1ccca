"""A typed QEMU command line: :class:`QemuCommand` -> ``argv()``.

Pure: builds a list of strings, starts nothing (the launcher does that).
Every command gets ``-nodefaults -display none -no-reboot`` so a guest that
resets (e.g. a triple fault) ends QEMU instead of rebooting, and by default
the ``isa-debug-exit`` device the probe exits through (QEMU then exits with
``(value << 1) | 1``: 33 for the probe's success, 35 for its failure).

Serial: ``-serial file:PATH`` or ``-serial stdio``.  With QEMU 7.2 this gives
an ISA 16550 at 0x3F8 on ``microvm`` too (its ``isa-serial`` option defaults
to on and takes the first ``-serial``), as on ``pc``/``q35``.

QMP: ``qmp=PATH`` adds ``-qmp unix:PATH`` (QEMU connects to a socket the rig
listens on, as rig.qemu.launcher does); ``qmp_server=True`` makes QEMU the
server instead (``unix:PATH,server=on,wait=off``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RigError

DEBUG_EXIT_IOBASE = 0xF4
DEBUG_EXIT_IOSIZE = 4
#: QEMU's exit status when the probe writes its success / failure value
EXIT_PROBE_OK = (0x10 << 1) | 1
EXIT_PROBE_FAIL = (0x11 << 1) | 1

_MEMORY = re.compile(r"^\d+[KMGT]?$")
_WORD = re.compile(r"^[A-Za-z0-9_.,=+-]+$")


class QemuCommandError(RigError):
    pass


def _opt_path(value: str | Path) -> str:
    """A path inside a ``key=value,...`` option: commas are doubled."""
    return str(value).replace(",", ",,")


@dataclass(frozen=True)
class QemuCommand:
    binary: str = "qemu-system-x86_64"
    machine: str = "microvm"
    accel: str = "tcg"
    cpu: str = "qemu64"
    kernel: str | Path | None = None
    initrd: str | Path | None = None
    append: str | None = None
    drive: str | Path | None = None
    drive_format: str = "raw"
    drive_interface: str | None = None  # None: the machine's default (ide on pc/q35)
    #: writes go to a temporary overlay: the image is shared by parallel cases and stays unchanged
    drive_snapshot: bool = True
    memory: str = "64M"
    smp: int | None = None
    serial: str | Path | None = "stdio"  # a file path, "stdio", or None for no serial
    qmp: str | Path | None = None
    qmp_server: bool = False
    debug_exit: bool = True
    firmware_dir: str | Path | None = None  # -L
    bios: str | Path | None = None  # -bios: a path, or a file name QEMU looks up in its data directories
    start_paused: bool = False  # -S
    extra: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("machine", "accel", "cpu"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _WORD.match(v):
                raise QemuCommandError(f"QEMU command: {name}={v!r} is not a valid -{name} value")
        if not _MEMORY.match(self.memory):
            raise QemuCommandError(f"QEMU command: memory={self.memory!r} is not a size like 64M")
        if self.smp is not None and self.smp < 1:
            raise QemuCommandError(f"QEMU command: smp={self.smp} must be at least 1")
        if (self.initrd is not None or self.append is not None) and self.kernel is None:
            raise QemuCommandError("QEMU command: initrd/append need a kernel")
        if isinstance(self.extra, str):
            raise QemuCommandError("QEMU command: extra must be a sequence of arguments, not one string")
        for name in ("binary", "kernel", "initrd", "drive", "serial", "qmp", "firmware_dir", "bios"):
            v = getattr(self, name)
            if v is not None and (str(v) == "" or "\n" in str(v)):
                raise QemuCommandError(f"QEMU command: {name}={v!r} is empty or has a newline")

    def argv(self) -> list[str]:
        a = [str(self.binary), "-nodefaults", "-display", "none", "-no-reboot"]
        a += ["-machine", self.machine, "-accel", self.accel, "-cpu", self.cpu, "-m", self.memory]
        if self.smp is not None:
            a += ["-smp", str(self.smp)]
        if self.firmware_dir is not None:
            a += ["-L", str(self.firmware_dir)]
        if self.bios is not None:
            a += ["-bios", str(self.bios)]
        if self.kernel is not None:
            a += ["-kernel", str(self.kernel)]
        if self.initrd is not None:
            a += ["-initrd", str(self.initrd)]
        if self.append is not None:
            a += ["-append", self.append]
        if self.drive is not None:
            spec = f"file={_opt_path(self.drive)},format={self.drive_format}"
            if self.drive_interface is not None:
                spec += f",if={self.drive_interface}"
            if self.drive_snapshot:
                spec += ",snapshot=on"
            a += ["-drive", spec]
        if self.serial is not None:
            s = str(self.serial)
            a += ["-serial", "stdio" if s == "stdio" else f"file:{s}"]
        if self.qmp is not None:
            q = f"unix:{_opt_path(self.qmp)}"
            if self.qmp_server:
                q += ",server=on,wait=off"
            a += ["-qmp", q]
        if self.debug_exit:
            a += ["-device", f"isa-debug-exit,iobase={DEBUG_EXIT_IOBASE:#x},iosize={DEBUG_EXIT_IOSIZE:#x}"]
        if self.start_paused:
            a.append("-S")
        a += [str(x) for x in self.extra]
        return a
