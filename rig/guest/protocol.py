"""The probe's line protocol (guests/probe/PROTOCOL.md) -> :class:`ProbeReport`.

A transcript is whatever came out of the guest's serial port (or the
user-mode probe's stdout).  Everything before the ``RIGPROBE`` header is noise
(SeaBIOS banner, kernel messages) and is skipped; everything after ``DONE`` is
ignored (the Linux guest prints more there).  Between the two, every line must
be a protocol line: a transcript that is truncated (no ``DONE``, a section
without ``END``), garbled (a line that is not a protocol line) or fails a
section's line count or CRC-32 raises :class:`ProbeProtocolError`, which names
the case and the line and carries the raw transcript.

Runtime experiments (``RT``/``RC`` lines) become :class:`RuntimeSnapshot` values:
for each mode, in order, e.g. ``osxsave/before``, ``osxsave/after``,
``pke/before``, ``pke/after`` (ring 0) or ``osxsave/observed`` (user mode); each
holds CR4, XCR0, the fault (if the CR4 write or XSETBV faulted) and the CPUID
rows read at that point (leaf 1 and 0xD.0/0xD.1 for ``osxsave``, 7.0 for ``pke``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cpuid.table import CpuidTable, Regs
from ..errors import RigError

SUPPORTED_VERSIONS = (1,)
#: QEMU's exit status when the probe writes 0x10 (success) / 0x11 (failure) to isa-debug-exit
EXIT_OK = 33
EXIT_FAIL = 35
MODES = ("real", "prot32", "long64", "user")

#: Modes each form reports (a mode may instead be announced as ``SKIP``).
FORM_MODES: dict[str, tuple[str, ...]] = {
    "pvh": ("prot32", "long64"),
    "bootsector": ("real", "prot32", "long64"),
    "user": ("user",),
}

_HEX8 = r"[0-9a-fA-F]{8}"
_MODE_RE = "|".join(MODES)
_HEADER = re.compile(r"RIGPROBE v=(\d+) form=([a-z0-9_-]+)$")
_MODE = re.compile(rf"MODE ({_MODE_RE})$")
_CPUID = re.compile(rf"(C|RC) ({_HEX8}) ({_HEX8}) ({_HEX8}) ({_HEX8}) ({_HEX8}) ({_HEX8})$")
_RT = re.compile(
    r"RT ([a-z0-9_]+) (before|after|observed) cr4=([0-9a-fA-F]{8}|-) xcr0=([0-9a-fA-F]{16}|-)"
    r" fault=(-|(cr4|xsetbv):(\d+))$"
)
_RT_SKIP = re.compile(r"RT ([a-z0-9_]+) skip reason=(\S+)$")
_FAULT = re.compile(rf"FAULT mode=(\S+) vec=(\d+) err=({_HEX8}) ip=([0-9a-fA-F]{{16}})$")
_END = re.compile(rf"END ({_MODE_RE}) (\d+) ({_HEX8})$")
_SKIP = re.compile(rf"SKIP ({_MODE_RE}) reason=(\S+)$")
_DONE = re.compile(r"DONE status=(ok|fail:\S+)$")


class ProbeProtocolError(RigError):
    """A probe transcript that cannot be trusted; ``transcript`` keeps the raw text."""

    def __init__(
        self,
        case: str,
        line: int | None,
        problem: str,
        transcript: str,
        transcript_path: Path | None = None,
    ) -> None:
        where = f"line {line}" if line is not None else "end of transcript"
        hint = f"raw transcript in {transcript_path}" if transcript_path else "the raw transcript is kept on the error"
        super().__init__(f"probe transcript of case {case}, {where}: {problem}", hint=hint)
        self.case = case
        self.line = line
        self.problem = problem
        self.transcript = transcript
        self.transcript_path = transcript_path


@dataclass(frozen=True)
class Fault:
    """An exception taken by a runtime step: ``step`` is ``cr4`` or ``xsetbv``."""

    step: str
    vector: int


@dataclass
class RuntimeSnapshot:
    """State at one point of a runtime experiment (one ``RT`` line and its ``RC`` rows)."""

    mode: str
    experiment: str  # "osxsave" | "pke"
    phase: str  # "before" | "after" | "observed" | "skip"
    cr4: int | None = None
    xcr0: int | None = None
    fault: Fault | None = None
    reason: str | None = None  # why the experiment was skipped
    cpuid: CpuidTable = field(default_factory=CpuidTable)

    def bit(self, leaf: int, subleaf: int, reg: str, bit: int) -> int | None:
        return self.cpuid.bit(leaf, subleaf, reg, bit)


@dataclass(frozen=True)
class ProbeFault:
    """An unexpected exception that ended the probe (``FAULT`` line)."""

    mode: str
    vector: int
    error_code: int
    ip: int


@dataclass
class ProbeReport:
    version: int
    form: str
    #: mode ("real", "prot32", "long64", "user") -> CPUID table read in that mode
    tables: dict[str, CpuidTable]
    #: mode -> runtime snapshots in transcript order
    runtime: dict[str, list[RuntimeSnapshot]]
    #: "ok" or "fail:<reason>"
    status: str
    transcript: str
    #: mode -> reason, for modes the probe announced it could not enter (``SKIP``)
    skipped: dict[str, str] = field(default_factory=dict)
    faults: list[ProbeFault] = field(default_factory=list)
    #: the mode whose section a failing probe left open, if any
    incomplete: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def snapshot(self, mode: str, experiment: str, phase: str) -> RuntimeSnapshot | None:
        for s in self.runtime.get(mode, []):
            if s.experiment == experiment and s.phase == phase:
                return s
        return None

    @property
    def modes(self) -> tuple[str, ...]:
        """Modes with a table, in transcript order."""
        return tuple(self.tables)

    def to_json(self) -> dict:
        """Tables and runtime snapshots as JSON (the raw transcript is an artefact of its own)."""
        return {
            "version": self.version,
            "form": self.form,
            "status": self.status,
            "tables": {m: t.to_json() for m, t in self.tables.items()},
            "runtime": {
                m: [
                    {
                        "experiment": s.experiment,
                        "phase": s.phase,
                        "cr4": None if s.cr4 is None else f"{s.cr4:08x}",
                        "xcr0": None if s.xcr0 is None else f"{s.xcr0:016x}",
                        "fault": None if s.fault is None else f"{s.fault.step}:{s.fault.vector}",
                        "reason": s.reason,
                        "cpuid": s.cpuid.to_json(),
                    }
                    for s in snaps
                ]
                for m, snaps in self.runtime.items()
            },
            "skipped": dict(self.skipped),
            "faults": [{"mode": f.mode, "vector": f.vector, "error_code": f.error_code, "ip": f.ip} for f in self.faults],
            "incomplete": self.incomplete,
        }


@dataclass
class _Section:
    mode: str
    start_line: int
    table: CpuidTable = field(default_factory=CpuidTable)
    runtime: list[RuntimeSnapshot] = field(default_factory=list)
    crc: int = 0
    count: int = 0


def _find_header(lines: list[str]) -> tuple[int, re.Match[str]] | None:
    for i, line in enumerate(lines):
        pos = line.find("RIGPROBE ")
        if pos >= 0:
            m = _HEADER.match(line[pos:].rstrip())
            if m:
                return i, m
    return None


def parse_transcript(text: str, *, case: str = "?", transcript_path: Path | None = None) -> ProbeReport:
    """Parse a probe transcript; see the module docstring for what is an error."""
    return _Parser(text, case, transcript_path).parse()


class _Parser:
    """One transcript: the header, then line by line inside or outside a ``MODE`` section, then the end."""

    def __init__(self, text: str, case: str, transcript_path: Path | None) -> None:
        self.text, self.case, self.path = text, case, transcript_path
        self.tables: dict[str, CpuidTable] = {}
        self.runtime: dict[str, list[RuntimeSnapshot]] = {}
        self.skipped: dict[str, str] = {}
        self.faults: list[ProbeFault] = []
        self.sec: _Section | None = None
        self.snap: RuntimeSnapshot | None = None
        self.status: str | None = None
        self.incomplete: str | None = None
        self.version, self.form = 0, ""

    def fail(self, line: int | None, problem: str) -> ProbeProtocolError:
        return ProbeProtocolError(self.case, line, problem, self.text, self.path)

    def parse(self) -> ProbeReport:
        lines = self.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        head_idx = self._header(lines)
        for idx in range(head_idx + 1, len(lines)):
            n, line = idx + 1, lines[idx]
            if idx == len(lines) - 1:
                if line == "":
                    break  # the newline that ends the last line
                raise self.fail(n, f"truncated in the middle of a line (no newline after {line[:40]!r})")
            done = self._in_section(n, line) if self.sec is not None else self._outside(n, line)
            if done:
                break
        return self._report()

    def _header(self, lines: list[str]) -> int:
        found = _find_header(lines)
        if found is None:
            raise self.fail(None, "no RIGPROBE header (the probe never started or the serial log is empty)")
        head_idx, hm = found
        self.version, self.form = int(hm.group(1)), hm.group(2)
        if self.version not in SUPPORTED_VERSIONS:
            raise self.fail(head_idx + 1, f"protocol version {self.version} not supported "
                                          f"(this rig reads {SUPPORTED_VERSIONS})")
        if self.form not in FORM_MODES:
            raise self.fail(head_idx + 1, f"unknown probe form {self.form!r}")
        return head_idx

    def _in_section(self, n: int, line: str) -> bool:
        """One line inside a section; True at a DONE line (the end of the transcript)."""
        sec = self.sec
        assert sec is not None
        if m := _END.match(line):
            self._end(n, sec, m)
            return False
        sec.crc = zlib.crc32((line + "\n").encode("latin-1", "replace"), sec.crc)
        sec.count += 1
        if m := _CPUID.match(line):
            self._cpuid(n, sec, m)
        elif m := _RT.match(line):
            fault = Fault(m.group(6), int(m.group(7))) if m.group(6) else None
            self.snap = RuntimeSnapshot(
                mode=sec.mode, experiment=m.group(1), phase=m.group(2),
                cr4=None if m.group(3) == "-" else int(m.group(3), 16),
                xcr0=None if m.group(4) == "-" else int(m.group(4), 16), fault=fault,
            )
            sec.runtime.append(self.snap)
        elif m := _RT_SKIP.match(line):
            sec.runtime.append(RuntimeSnapshot(sec.mode, m.group(1), "skip", reason=m.group(2)))
            self.snap = None
        elif m := _FAULT.match(line):
            self.faults.append(ProbeFault(m.group(1), int(m.group(2)), int(m.group(3), 16), int(m.group(4), 16)))
        elif m := _DONE.match(line):
            self.status = m.group(1)
            if self.status == "ok":
                raise self.fail(n, f"DONE status=ok inside section MODE {sec.mode} (line {sec.start_line}) without END")
            self.incomplete = sec.mode
            return True
        else:
            raise self.fail(n, f"not a protocol line inside section MODE {sec.mode}: {line[:80]!r}")
        return False

    def _end(self, n: int, sec: _Section, m: re.Match[str]) -> None:
        mode, count, crc = m.group(1), int(m.group(2)), int(m.group(3), 16)
        if mode != sec.mode:
            raise self.fail(n, f"END {mode} closes section MODE {sec.mode} (line {sec.start_line})")
        if count != sec.count:
            raise self.fail(n, f"section {mode} has {sec.count} lines but END says {count} (lines lost or added)")
        if crc != sec.crc:
            raise self.fail(n, f"section {mode} CRC-32 {sec.crc:08x} does not match END's {crc:08x} (garbled)")
        self.tables[mode] = sec.table
        self.runtime[mode] = sec.runtime
        self.sec, self.snap = None, None

    def _cpuid(self, n: int, sec: _Section, m: re.Match[str]) -> None:
        tag = m.group(1)
        leaf, sub, a, b, c, d = (int(x, 16) for x in m.groups()[1:])
        if tag == "C":
            if (leaf, sub) in sec.table:
                raise self.fail(n, f"leaf {leaf:#x} subleaf {sub} reported twice in mode {sec.mode}")
            sec.table.set(leaf, sub, Regs(a, b, c, d))
            return
        if self.snap is None:
            raise self.fail(n, "RC line without a preceding RT line")
        self.snap.cpuid.set(leaf, sub, Regs(a, b, c, d))

    def _outside(self, n: int, line: str) -> bool:
        """One line outside a section; True at the DONE line."""
        if m := _MODE.match(line):
            mode = m.group(1)
            if mode in self.tables or mode in self.skipped:
                raise self.fail(n, f"mode {mode} reported twice")
            if mode not in FORM_MODES[self.form]:
                raise self.fail(n, f"mode {mode} is not reported by the {self.form} form")
            self.sec = _Section(mode, n)
            self.sec.crc = zlib.crc32((line + "\n").encode("latin-1", "replace"), 0)
            self.sec.count = 1
        elif m := _SKIP.match(line):
            self.skipped[m.group(1)] = m.group(2)
        elif m := _FAULT.match(line):
            self.faults.append(ProbeFault(m.group(1), int(m.group(2)), int(m.group(3), 16), int(m.group(4), 16)))
        elif m := _DONE.match(line):
            self.status = m.group(1)
            return True
        else:
            raise self.fail(n, f"not a protocol line: {line[:80]!r}")
        return False

    def _report(self) -> ProbeReport:
        if self.status is None:
            if self.sec is not None:
                raise self.fail(None, f"truncated: section MODE {self.sec.mode} (line {self.sec.start_line}) has no "
                                      "END and there is no DONE")
            raise self.fail(None, "truncated: no DONE line")
        if self.status == "ok":
            missing = [m for m in FORM_MODES[self.form] if m not in self.tables and m not in self.skipped]
            if missing:
                raise self.fail(None, f"DONE status=ok but mode(s) {', '.join(missing)} neither reported nor skipped")
        return ProbeReport(version=self.version, form=self.form, tables=self.tables, runtime=self.runtime,
                           status=self.status, transcript=self.text, skipped=self.skipped, faults=self.faults,
                           incomplete=self.incomplete)


def probe_check(case: str = "?") -> Callable[[str, int], Any]:
    """A :data:`rig.qemu.launcher.ProbeCheck`: the run is complete when QEMU exited with the probe's
    success status (33) and the transcript parses with ``DONE status=ok``."""
    from ..qemu.launcher import ProbeVerdict

    def check(serial_text: str, exit_code: int) -> ProbeVerdict:
        try:
            report = parse_transcript(serial_text, case=case)
        except ProbeProtocolError as e:
            return ProbeVerdict(False, e.problem + (f" (QEMU exit status {exit_code})" if exit_code != EXIT_OK else ""))
        if exit_code == EXIT_FAIL or not report.ok:
            return ProbeVerdict(False, f"probe reported failure: DONE status={report.status}")
        if exit_code != EXIT_OK:
            return ProbeVerdict(False, f"probe reported but QEMU exited with {exit_code}, not {EXIT_OK}")
        return ProbeVerdict(True, f"probe reported {', '.join(report.modes)}")

    return check


def parse_file(path: Path, *, case: str = "?") -> ProbeReport:
    """Parse a transcript file (a serial log); unreadable files are a :class:`ProbeProtocolError` too."""
    try:
        text = Path(path).read_bytes().decode("latin-1")
    except OSError as e:
        raise ProbeProtocolError(case, None, f"cannot read {path}: {e.strerror}", "", Path(path)) from None
    return parse_transcript(text, case=case, transcript_path=Path(path))
