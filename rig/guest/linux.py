"""The linux guest's framed output (guests/linux/init) -> :class:`LinuxReport`.

The data port carries::

    RIGLINUX v=1 release=<uname -r>
    SECTION <name>
    ...
    ENDSECTION <name> lines=<N> md5=<md5 of the lines> [rc=<status>]
    ...
    RIGLINUX END

Outside sections, any other line is console noise (kernel messages) and is
skipped. Inside a section every line counts: a line count or md5 that does
not match, a missing ``ENDSECTION`` or ``RIGLINUX END``, or a missing
section is a :class:`LinuxProtocolError`. Like the probe's errors, it names the
case and keeps the raw transcript. The ``probe`` section is parsed with
:func:`rig.guest.protocol.parse_transcript` (user mode).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..cpuid.table import CpuidTable
from ..errors import RigError
from .protocol import ProbeProtocolError, ProbeReport, parse_transcript

SUPPORTED_VERSIONS = (1,)
SECTIONS = ("probe", "flags", "bugs", "vulnerabilities")

_HEADER = re.compile(r"RIGLINUX v=(\d+) release=(\S+)$")
_SECTION = re.compile(r"SECTION ([a-z0-9_]+)$")
_END = re.compile(r"ENDSECTION ([a-z0-9_]+) lines=(\d+) md5=([0-9a-f]{32})(?: rc=(\d+))?$")


class LinuxProtocolError(RigError):
    """A linux guest transcript that cannot be trusted; ``transcript`` keeps the raw text."""

    def __init__(self, case: str, line: int | None, problem: str, transcript: str, transcript_path: Path | None = None):
        where = f"line {line}" if line is not None else "end of transcript"
        hint = f"raw transcript in {transcript_path}" if transcript_path else "the raw transcript is kept on the error"
        super().__init__(f"linux guest transcript of case {case}, {where}: {problem}", hint=hint)
        self.case = case
        self.line = line
        self.problem = problem
        self.transcript = transcript
        self.transcript_path = transcript_path


@dataclass
class LinuxReport:
    release: str  # the guest kernel's uname -r
    probe: ProbeReport  # the user-mode probe run inside the guest
    flags: list[str]  # CPU 0's /proc/cpuinfo "flags"
    bugs: list[str]  # CPU 0's /proc/cpuinfo "bugs"
    vulnerabilities: dict[str, str]  # /sys/devices/system/cpu/vulnerabilities/<file> -> content
    probe_rc: int | None
    transcript: str
    sections: dict[str, list[str]] = field(default_factory=dict)

    @property
    def table(self) -> CpuidTable:
        """The CPUID table the user-mode probe read."""
        return self.probe.tables["user"]

    def to_json(self) -> dict:
        return {
            "release": self.release,
            "flags": self.flags,
            "bugs": self.bugs,
            "vulnerabilities": self.vulnerabilities,
            "probe_rc": self.probe_rc,
            "probe": self.probe.to_json(),
        }


def parse_linux_transcript(text: str, *, case: str = "?", transcript_path: Path | None = None) -> LinuxReport:
    def fail(line: int | None, problem: str) -> LinuxProtocolError:
        return LinuxProtocolError(case, line, problem, text, transcript_path)

    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = None
    for i, ln in enumerate(lines):
        pos = ln.find("RIGLINUX v=")
        if pos >= 0 and (m := _HEADER.match(ln[pos:].rstrip())):
            head = (i, m)
            break
    if head is None:
        raise fail(None, "no RIGLINUX header (the guest never reached /init, or the kernel did not boot)")
    idx0, hm = head
    if int(hm.group(1)) not in SUPPORTED_VERSIONS:
        raise fail(idx0 + 1, f"protocol version {hm.group(1)} not supported")
    release = hm.group(2)
    sections: dict[str, list[str]] = {}
    rcs: dict[str, int | None] = {}
    cur: str | None = None
    start = 0
    body: list[str] = []
    ended = False
    for idx in range(idx0 + 1, len(lines)):
        n, ln = idx + 1, lines[idx]
        if cur is not None:
            if m := _END.match(ln):
                name, count, md5 = m.group(1), int(m.group(2)), m.group(3)
                if name != cur:
                    raise fail(n, f"ENDSECTION {name} closes SECTION {cur} (line {start})")
                if count != len(body):
                    raise fail(n, f"section {name} has {len(body)} lines but ENDSECTION says {count} (lines lost or added)")
                digest = hashlib.md5("".join(b + "\n" for b in body).encode("latin-1", "replace")).hexdigest()
                if digest != md5:
                    raise fail(n, f"section {name} md5 {digest} does not match ENDSECTION's {md5} (garbled)")
                sections[name] = body
                rcs[name] = int(m.group(4)) if m.group(4) else None
                cur, body = None, []
                continue
            if idx == len(lines) - 1 and ln == "":
                break
            body.append(ln)
            continue
        if m := _SECTION.match(ln):
            if m.group(1) in sections:
                raise fail(n, f"section {m.group(1)} reported twice")
            cur, start, body = m.group(1), n, []
            continue
        if ln.strip() == "RIGLINUX END":
            ended = True
            break
        # anything else outside a section is console noise
    if cur is not None:
        raise fail(None, f"truncated: SECTION {cur} (line {start}) has no ENDSECTION")
    if not ended:
        raise fail(None, "truncated: no RIGLINUX END line")
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise fail(None, f"section(s) {', '.join(missing)} missing")
    probe_text = "\n".join(sections["probe"]) + "\n"
    try:
        probe = parse_transcript(probe_text, case=f"{case}/probe-user")
    except ProbeProtocolError as e:
        raise fail(None, f"probe section: {e.problem}") from None
    if "user" not in probe.tables:
        raise fail(None, f"probe section: no user-mode table (status {probe.status})")
    vulns: dict[str, str] = {}
    for ln in sections["vulnerabilities"]:
        name, sep, value = ln.partition(": ")
        if not sep:
            raise fail(None, f"vulnerabilities section: line {ln[:60]!r} is not 'file: content'")
        vulns[name] = value
    return LinuxReport(
        release=release,
        probe=probe,
        flags=" ".join(sections["flags"]).split(),
        bugs=" ".join(sections["bugs"]).split(),
        vulnerabilities=vulns,
        probe_rc=rcs.get("probe"),
        transcript=text,
        sections=sections,
    )
