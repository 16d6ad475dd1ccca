"""The rig's result types: a :class:`Case`, its :class:`Finding` values and its :class:`CaseResult`.

``run`` makes them, ``report``, ``history`` and ``fleet`` read them; this module imports
none of those (only ``rig.cpuid`` and the case axes).

A case is one QEMU boot: (host, QEMU binary, accelerator, machine, CPU model, flags,
guest).  Its :attr:`Case.id` is readable *and* stable: the readable part names the
model, variant, machine and accelerator; a short hash of every field that influences
the result makes it unique, so ``-k`` filtering, ``--resume`` and the history database
can key on it across runs.  Its host, guest and machine are parsed once, when the case
is made (:mod:`rig.caseaxes`): :attr:`Case.host_spec`, :attr:`Case.guest_spec`,
:attr:`Case.machine_spec`.

Verdicts (:class:`Verdict`):

* ``pass``        -- the case ran and nothing differed;
* ``approximate`` -- it would pass, but its prediction rests on an approximate input
  (:attr:`CaseResult.approximations` names each one and how to get the exact input);
* ``expected``    -- only expected differences (known bugs, host quirks, or an outcome listed
  as a known issue), none in the matrix's ``fail_on``;
* ``fail``        -- at least one unexpected finding or outcome (listed in ``unexpected``);
* ``error``       -- the rig itself failed on this case (``rig-error``; a bug or setup problem).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .caseaxes import GuestSpec, HostSpec, MachineSpec, parse_guest, parse_host, parse_machine
from .cpuid.table import Location

RESULT_FORMAT = "rig-result/1"


class Outcome(StrEnum):
    """How a case's run ended (QEMU failing is an outcome, not an exception)."""

    OK = "ok"
    SIMULATED = "simulated"
    PROBE_FAILED = "probe-failed"
    QEMU_ABORTED = "qemu-aborted"
    TIMEOUT = "timeout"
    QEMU_ERROR = "qemu-error"
    QMP_ERROR = "qmp-error"
    RIG_ERROR = "rig-error"

    @property
    def complete(self) -> bool:
        """A complete result (everything else is an outcome class of its own)."""
        return self in (Outcome.OK, Outcome.SIMULATED)


#: outcomes that are not complete results ("rig-error" is the rig's fault)
PROBLEM_OUTCOMES: tuple[Outcome, ...] = tuple(o for o in Outcome if not o.complete)


class FindingClass(StrEnum):
    """Which layer a differing bit comes from (see rig.compare.threeway); also the vocabulary of ``fail_on``."""

    MODEL_GAP = "model-gap"
    QEMU_BEHAVIOUR = "qemu-behaviour"
    KVM_BEHAVIOUR = "kvm-behaviour"
    HOST_QUIRK = "host-quirk"
    KNOWN_BUG = "known-bug"


class Verdict(StrEnum):
    PASS = "pass"
    APPROXIMATE = "approximate"
    EXPECTED = "expected"
    FAIL = "fail"
    ERROR = "error"

    @property
    def unexpected(self) -> bool:
        return self in (Verdict.FAIL, Verdict.ERROR)


DEFAULT_FAIL_ON: tuple[str, ...] = (
    FindingClass.MODEL_GAP, FindingClass.QEMU_BEHAVIOUR, FindingClass.KVM_BEHAVIOUR,
    Outcome.PROBE_FAILED, Outcome.QEMU_ABORTED, Outcome.TIMEOUT, Outcome.QEMU_ERROR, Outcome.QMP_ERROR,
    Outcome.RIG_ERROR,
)

_SAFE = re.compile(r"[^A-Za-z0-9_.+=-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "_"


@dataclass(frozen=True)
class Case:
    host: str           # "native", "simulate[:PROFILE[@KERNEL]]", "emulated:MODEL@KERNEL[,p=v...]"
    qemu: str           # "system" (qemu-system-x86_64 on PATH), a path, or a version such as "10.0"
    accel: str          # "tcg" | "kvm"
    machine: str        # "microvm", "q35", "pc", "q35+pvh", ...
    model: str          # QEMU CPU model name
    variant: str = "default"
    flags: tuple[str, ...] = ()
    guest: str = "probe"
    timeout: float = 20.0
    group: str = ""
    #: the typed axes, parsed from the strings above when the case is made (CaseSpecError if malformed)
    host_spec: HostSpec = field(init=False, repr=False, compare=False)
    guest_spec: GuestSpec = field(init=False, repr=False, compare=False)
    machine_spec: MachineSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "host_spec", parse_host(self.host))
        object.__setattr__(self, "guest_spec", parse_guest(self.guest))
        object.__setattr__(self, "machine_spec", parse_machine(self.machine))

    @property
    def cpu_arg(self) -> str:
        """The ``-cpu`` argument."""
        return ",".join((self.model, *self.flags))

    def identity(self) -> dict:
        """Every field that influences the result (``timeout`` and ``group`` do not)."""
        return {
            "host": self.host, "qemu": self.qemu, "accel": self.accel, "machine": self.machine,
            "model": self.model, "flags": list(self.flags), "guest": self.guest,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    @property
    def id(self) -> str:
        parts = [self.model, self.variant, self.machine, self.accel]
        if self.guest != "probe":
            parts.append(self.guest)
        if self.host != "native":
            parts.append(self.host.replace(":", "-"))
        if self.qemu != "system":
            parts.append("qemu" + Path(self.qemu).name if "/" in self.qemu else "qemu" + self.qemu)
        return "-".join(_slug(p) for p in parts) + "-" + self.digest

    def to_json(self) -> dict:
        d = self.identity()
        d.update(id=self.id, variant=self.variant, timeout=self.timeout, group=self.group, cpu=self.cpu_arg)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Case:
        return cls(
            host=d["host"], qemu=d["qemu"], accel=d["accel"], machine=d["machine"], model=d["model"],
            variant=d.get("variant", "default"), flags=tuple(d.get("flags", ())), guest=d.get("guest", "probe"),
            timeout=float(d.get("timeout", 20.0)), group=d.get("group", ""),
        )


@dataclass(frozen=True)
class IssueRef:
    id: str
    title: str
    link: str

    @classmethod
    def of(cls, issue: Any) -> IssueRef:
        """From a ``rig.matrix.model.KnownIssue`` (anything with ``id``, ``title``, ``link``)."""
        return cls(issue.id, issue.title, issue.link)


@dataclass(frozen=True)
class Finding:
    location: Location
    name: str
    cls: FindingClass        # the class (known-bug when a known issue matched)
    layer: FindingClass      # the class before known-issue matching
    view: str                # "guest" (predicted/configured/observed), "runtime", "filtered", "kvm", "insn"
    predicted: int | None
    configured: int | None
    observed: dict[str, int] = field(default_factory=dict)  # mode -> bit
    issue: IssueRef | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cls", FindingClass(self.cls))
        object.__setattr__(self, "layer", FindingClass(self.layer))

    @property
    def key(self) -> str:
        return f"{self.view}:{self.location}"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "location": str(self.location), "leaf": self.location.leaf, "subleaf": self.location.subleaf,
            "reg": self.location.reg, "bit": self.location.bit, "name": self.name, "class": str(self.cls),
            "layer": str(self.layer), "view": self.view, "predicted": self.predicted, "configured": self.configured,
            "observed": dict(self.observed),
        }
        if self.issue:
            d["issue"] = {"id": self.issue.id, "title": self.issue.title, "link": self.issue.link}
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Finding:
        iss = d.get("issue")
        return cls(
            location=Location(int(d["leaf"]), int(d["subleaf"]), d["reg"], int(d["bit"])), name=d["name"],
            cls=FindingClass(d["class"]), layer=FindingClass(d["layer"]), view=d["view"],
            predicted=d.get("predicted"), configured=d.get("configured"), observed=dict(d.get("observed", {})),
            issue=IssueRef(iss["id"], iss["title"], iss["link"]) if iss else None, note=d.get("note", ""),
        )


@dataclass
class CaseResult:
    case: Case
    outcome: Outcome
    findings: list[Finding] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    verdict: Verdict = Verdict.PASS
    duration_s: float = 0.0
    message: str = ""
    qemu_version: str | None = None
    outcome_issue: IssueRef | None = None
    #: per compared register "0xLEAF.SUB.reg" -> [predicted, configured, observed] (hex or None)
    words: dict[str, list[str | None]] = field(default_factory=dict)
    quirk: str | None = None
    finished_at: str = ""
    #: case directory relative to the run directory
    artifacts: str = ""
    #: the approximate inputs the prediction rests on, one sentence each (empty: every input exact)
    approximations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        self.verdict = Verdict(self.verdict)

    @property
    def id(self) -> str:
        return self.case.id

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": RESULT_FORMAT, "id": self.id, "case": self.case.to_json(), "outcome": str(self.outcome),
            "verdict": str(self.verdict), "unexpected": self.unexpected, "duration_s": round(self.duration_s, 4),
            "message": self.message, "qemu_version": self.qemu_version, "quirk": self.quirk,
            "findings": [f.to_json() for f in self.findings], "words": self.words,
            "finished_at": self.finished_at, "artifacts": self.artifacts,
        }
        if self.approximations:
            d["approximations"] = list(self.approximations)
        if self.outcome_issue:
            d["outcome_issue"] = {"id": self.outcome_issue.id, "title": self.outcome_issue.title,
                                  "link": self.outcome_issue.link}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CaseResult:
        oi = d.get("outcome_issue")
        return cls(
            case=Case.from_json(d["case"]), outcome=Outcome(d["outcome"]),
            findings=[Finding.from_json(f) for f in d.get("findings", [])],
            unexpected=list(d.get("unexpected", [])), verdict=Verdict(d.get("verdict", "pass")),
            duration_s=float(d.get("duration_s", 0.0)), message=d.get("message", ""),
            qemu_version=d.get("qemu_version"), outcome_issue=IssueRef(oi["id"], oi["title"], oi["link"]) if oi else None,
            words={k: list(v) for k, v in d.get("words", {}).items()}, quirk=d.get("quirk"),
            finished_at=d.get("finished_at", ""), artifacts=d.get("artifacts", ""),
            approximations=tuple(d.get("approximations", ())),
        )


def judge(result: CaseResult, fail_on: Iterable[str]) -> CaseResult:
    """Fill ``unexpected`` and ``verdict`` from findings, outcome, approximations and the matrix's ``fail_on``."""
    fail_on = set(fail_on)
    unexpected = [f"{f.cls}: {f.name} {f.location}" for f in result.findings if f.cls in fail_on]
    if not result.outcome.complete and result.outcome_issue is None and result.outcome in fail_on:
        unexpected.insert(0, f"{result.outcome}: {result.message}".rstrip(": "))
    result.unexpected = unexpected
    if result.outcome == Outcome.RIG_ERROR:
        result.verdict = Verdict.ERROR
    elif unexpected:
        result.verdict = Verdict.FAIL
    elif result.findings or not result.outcome.complete:
        result.verdict = Verdict.EXPECTED
    elif result.approximations:
        result.verdict = Verdict.APPROXIMATE
        # every report that shows a case's message (HTML, JUnit <skipped>, TAP # SKIP) then says what was used
        missing = [f"APPROXIMATE: {a}" for a in result.approximations if a not in result.message]
        result.message = "; ".join([result.message, *missing] if result.message else missing)
    else:
        result.verdict = Verdict.PASS
    return result
