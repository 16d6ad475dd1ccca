"""Instruction checks: does an advertised instruction run, does a hidden one fault?

``guests/insncheck`` executes one representative instruction per test inside
the guest and prints a line per test (protocol in its source).  This module
parses that output and classifies each result against what the guest was told:
the CPUID table the probe read in the guest's user mode (so runtime bits the
guest kernel set, OSXSAVE/OSPKE, are included), the XCR0 the kernel enabled and
AT_HWCAP2.  Which features and OS conditions each test needs is data:
``rig/guest/data/instructions.toml``.

Verdicts (:data:`VERDICTS`):

* ``ok``: advertised, the OS enabled it, it ran;
* ``advertised-but-faults``: advertised and enabled, yet it raised a signal
  (or ran with its legacy meaning): a **finding**;
* ``os-not-enabled``: CPUID advertises it but the guest kernel did not enable
  what it needs (XCR0 state, CR4.PKE, CR4.FSGSBASE), and it faulted: the
  kernel's choice, not a CPUID bug;
* ``hidden-but-works``: not advertised, yet it ran: a **finding** attributed to
  the layer that executes guest instructions.  Under TCG that is QEMU: TCG
  implements instructions regardless of the ``-cpu`` model for many features
  (a QEMU behaviour, expected there).  Under KVM it is the host CPU: CPUID
  masking cannot make an instruction fault unless the VMM controls an enable
  bit (XCR0, CR4);
* ``hidden-faults``: not advertised and it faulted (or ran as its legacy
  encoding): consistent;
* ``not-run``: insncheck printed no result (unknown test name).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from ..cpuid.table import CpuidTable
from ..errors import RigError

VERDICTS = ("ok", "advertised-but-faults", "os-not-enabled", "hidden-but-works", "hidden-faults", "not-run")
FINDING_VERDICTS = frozenset({"advertised-but-faults", "hidden-but-works"})
PROTOCOL_HEADER = "rig-insncheck 1"


class InstructionDataError(RigError):
    pass


class InsncheckFormatError(RigError):
    """insncheck's output could not be read."""


@dataclass(frozen=True)
class FeatureBit:
    name: str
    leaf: int
    subleaf: int
    reg: str
    bit: int

    def is_set(self, table: CpuidTable) -> bool:
        return bool(table.value(self.leaf, self.subleaf, self.reg) >> self.bit & 1)


@dataclass(frozen=True)
class InsnTest:
    name: str
    needs: tuple[str, ...]
    xcr0: int = 0
    runtime: tuple[str, ...] = ()
    hwcap2: int = 0
    legacy: str = ""
    note: str = ""

    @property
    def feature(self) -> str:
        """The catalogue feature a finding is named by."""
        return self.needs[0]


@dataclass(frozen=True)
class InstructionData:
    features: dict[str, FeatureBit]
    tests: tuple[InsnTest, ...]

    def test(self, name: str) -> InsnTest:
        for t in self.tests:
            if t.name == name:
                return t
        raise InstructionDataError(f"no instruction test named {name!r}")

    def tests_for(self, features: list[str]) -> list[InsnTest]:
        """Tests whose finding feature is one of ``features``."""
        wanted = set(features)
        return [t for t in self.tests if t.feature in wanted]


def load_instruction_data(path: Path | None = None) -> InstructionData:
    where = str(path) if path else "rig/guest/data/instructions.toml"
    try:
        text = path.read_text() if path else resources.files("rig.guest").joinpath("data/instructions.toml").read_text()
        d = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InstructionDataError(f"{where}: {e}") from None
    features: dict[str, FeatureBit] = {}
    for i, f in enumerate(d.get("feature", [])):
        try:
            fb = FeatureBit(f["name"], int(f["leaf"]), int(f.get("subleaf", 0)), f["reg"].lower(), int(f["bit"]))
        except KeyError as e:
            raise InstructionDataError(f"{where}: feature {i} lacks {e.args[0]!r}") from None
        if fb.reg not in ("eax", "ebx", "ecx", "edx") or not 0 <= fb.bit < 32:
            raise InstructionDataError(f"{where}: feature {fb.name}: bad register or bit")
        if fb.name in features:
            raise InstructionDataError(f"{where}: feature {fb.name} listed twice")
        features[fb.name] = fb
    tests: list[InsnTest] = []
    for i, t in enumerate(d.get("test", [])):
        try:
            test = InsnTest(
                name=t["name"], needs=tuple(t["needs"]), xcr0=int(t.get("xcr0", 0)),
                runtime=tuple(t.get("runtime", ())), hwcap2=int(t.get("hwcap2", 0)),
                legacy=t.get("legacy", ""), note=t.get("note", ""),
            )
        except KeyError as e:
            raise InstructionDataError(f"{where}: test {i} lacks {e.args[0]!r}") from None
        if not test.needs:
            raise InstructionDataError(f"{where}: test {test.name}: 'needs' is empty")
        for n in (*test.needs, *test.runtime):
            if n not in features:
                raise InstructionDataError(f"{where}: test {test.name} names unknown feature {n!r}")
        if any(x.name == test.name for x in tests):
            raise InstructionDataError(f"{where}: test {test.name} listed twice")
        tests.append(test)
    return InstructionData(features, tuple(tests))


@cache
def instruction_data() -> InstructionData:
    """The packaged data (loaded once; immutable)."""
    return load_instruction_data()


# -- insncheck output -------------------------------------------------------------------


@dataclass(frozen=True)
class InsnOutcome:
    outcome: str  # "ok" | "fault" | "legacy" | "unknown"
    signal: str = ""


@dataclass(frozen=True)
class InsnRun:
    """Parsed insncheck output."""

    hwcap2: int | None
    xcr0: int | None  # None: XGETBV faulted (CR4.OSXSAVE clear)
    outcomes: dict[str, InsnOutcome] = field(default_factory=dict)


_LINE = re.compile(r"^insn (\S+) (ok|legacy|unknown|fault (SIG[A-Z]+))$")


def parse_insncheck(text: str) -> InsnRun:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != PROTOCOL_HEADER:
        first = lines[0][:60] if lines else "(no output)"
        raise InsncheckFormatError(f"insncheck output does not start with {PROTOCOL_HEADER!r}: {first!r}")
    hwcap2 = xcr0 = None
    outcomes: dict[str, InsnOutcome] = {}
    end: int | None = None
    for ln in lines[1:]:
        if end is not None:
            raise InsncheckFormatError(f"insncheck output continues after 'end': {ln[:60]!r}")
        if ln.startswith("hwcap2 "):
            hwcap2 = int(ln.split()[1], 16)
        elif ln.startswith("xcr0 "):
            xcr0 = int(ln.split()[1], 16)
        elif ln.startswith("end "):
            end = int(ln.split()[1])
        elif m := _LINE.match(ln):
            kind = "fault" if m.group(3) else m.group(2)
            outcomes[m.group(1)] = InsnOutcome(kind, m.group(3) or "")
        else:
            raise InsncheckFormatError(f"insncheck: unexpected line {ln[:60]!r}")
    if end is None:
        raise InsncheckFormatError("insncheck output has no 'end' line (truncated: did it crash?)")
    if end != len(outcomes):
        raise InsncheckFormatError(f"insncheck: 'end {end}' but {len(outcomes)} results")
    return InsnRun(hwcap2, xcr0, outcomes)


# -- classification -----------------------------------------------------------------------


@dataclass(frozen=True)
class InsnResult:
    test: str
    feature: str  # catalogue name the result is about
    outcome: str  # what happened (InsnOutcome.outcome or "missing")
    signal: str
    advertised: bool  # every feature in `needs` set in the guest's CPUID
    os_ready: bool  # runtime bits / XCR0 / HWCAP2 conditions hold
    missing: tuple[str, ...]  # what was not advertised or not enabled
    verdict: str
    layer: str  # who is responsible for a finding: "qemu" (TCG), "hardware" (KVM), "guest-kernel", ""
    explanation: str

    @property
    def finding(self) -> bool:
        return self.verdict in FINDING_VERDICTS

    def line(self) -> str:
        what = self.outcome + (f" {self.signal}" if self.signal else "")
        extra = f" [{self.layer}]" if self.layer else ""
        return f"{self.feature:<12} {self.test:<12} {what:<14} {self.verdict}{extra}: {self.explanation}"


@dataclass(frozen=True)
class InsnReport:
    results: tuple[InsnResult, ...]
    xcr0: int | None
    hwcap2: int | None
    accel: str

    def by_test(self, name: str) -> InsnResult:
        for r in self.results:
            if r.test == name:
                return r
        raise KeyError(name)

    def with_verdict(self, verdict: str) -> list[InsnResult]:
        return [r for r in self.results if r.verdict == verdict]

    @property
    def findings(self) -> list[InsnResult]:
        return [r for r in self.results if r.finding]

    @property
    def advertised_but_faults(self) -> list[InsnResult]:
        return self.with_verdict("advertised-but-faults")

    @property
    def hidden_but_works(self) -> list[InsnResult]:
        return self.with_verdict("hidden-but-works")

    def to_json(self) -> dict:
        return {
            "accel": self.accel,
            "xcr0": None if self.xcr0 is None else f"0x{self.xcr0:x}",
            "hwcap2": None if self.hwcap2 is None else f"0x{self.hwcap2:x}",
            "results": [
                {
                    "test": r.test, "feature": r.feature, "outcome": r.outcome, "signal": r.signal,
                    "advertised": r.advertised, "os_ready": r.os_ready, "missing": list(r.missing),
                    "verdict": r.verdict, "layer": r.layer, "explanation": r.explanation,
                }
                for r in self.results
            ],
        }


def _os_conditions(test: InsnTest, table: CpuidTable, run: InsnRun, data: InstructionData) -> list[str]:
    """The OS enablement conditions of ``test`` that do not hold."""
    unmet = [n for n in test.runtime if not data.features[n].is_set(table)]
    if test.xcr0 and ((run.xcr0 or 0) & test.xcr0) != test.xcr0:
        have = "XGETBV faulted" if run.xcr0 is None else f"XCR0=0x{run.xcr0:x}"
        unmet.append(f"XCR0 bits 0x{test.xcr0:x} ({have})")
    if test.hwcap2 and ((run.hwcap2 or 0) & test.hwcap2) != test.hwcap2:
        unmet.append(f"AT_HWCAP2 0x{test.hwcap2:x}")
    return unmet


def _hidden_layer(accel: str) -> tuple[str, str]:
    if accel == "tcg":
        return "qemu", "QEMU's TCG executes it although CPUID hides it (expected under TCG: a QEMU behaviour)"
    return "hardware", "the host CPU executes it; hiding a CPUID bit does not make the instruction fault"


def classify_test(test: InsnTest, outcome: InsnOutcome | None, table: CpuidTable, run: InsnRun, accel: str,
                  data: InstructionData) -> InsnResult:
    not_advertised = tuple(n for n in test.needs if not data.features[n].is_set(table))
    unmet = _os_conditions(test, table, run, data)
    advertised = not not_advertised
    ready = not unmet
    what = outcome.outcome if outcome else "missing"
    sig = outcome.signal if outcome else ""
    ran = what == "ok"
    note = f" ({test.note})" if test.note else ""
    layer = ""
    if what in ("missing", "unknown"):
        verdict, expl = "not-run", "insncheck has no result for this test"
    elif advertised and ready:
        if ran:
            verdict, expl = "ok", "advertised and runs"
        else:
            how = f"raised {sig}" if sig else "ran with its legacy meaning"
            verdict, expl = "advertised-but-faults", f"advertised and enabled but {how}{note}"
            layer = "qemu" if accel == "tcg" else "hardware"
    elif advertised:
        if ran:
            verdict, expl = "ok", f"advertised and runs although {', '.join(unmet)} not set"
        else:
            verdict = "os-not-enabled"
            expl = f"advertised in CPUID, but the guest kernel did not enable it: {', '.join(unmet)} missing{note}"
            layer = "guest-kernel"
    elif ran:
        verdict = "hidden-but-works"
        layer, expl = _hidden_layer(accel)
        if test.legacy:
            expl += f"; note: {test.legacy}"
        elif test.note:
            expl += f"; note: {test.note}"
    else:
        verdict = "hidden-faults"
        expl = "not advertised; " + ("faults" if what == "fault" else f"runs as legacy: {test.legacy or 'legacy'}")
    return InsnResult(test.name, test.feature, what, sig, advertised, ready, not_advertised + tuple(unmet),
                      verdict, layer, expl)


def classify(run: InsnRun, table: CpuidTable, *, accel: str, data: InstructionData | None = None,
             tests: list[str] | None = None) -> InsnReport:
    """Classify every test of ``data`` (or only ``tests``) against the guest's user-mode CPUID ``table``."""
    data = data or instruction_data()
    chosen = [data.test(n) for n in tests] if tests is not None else list(data.tests)
    results = tuple(classify_test(t, run.outcomes.get(t.name), table, run, accel, data) for t in chosen)
    return InsnReport(results, run.xcr0, run.hwcap2, accel)
