"""The result of one case: outcome, findings, verdict; one JSON line in ``results.jsonl``.

Verdicts:

* ``pass``     -- the case ran and nothing differed;
* ``expected`` -- only expected differences (known bugs, host quirks, or an
  outcome listed as a known issue), none in the matrix's ``fail_on``;
* ``fail``     -- at least one unexpected finding or outcome (listed in ``unexpected``);
* ``error``    -- the rig itself failed on this case (``rig-error``; a bug or setup problem);
* ``approximate`` -- would be ``pass``, but the prediction used an approximate model
  input (``approximations`` says which and how to get the exact one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..compare.threeway import Finding, IssueRef
from ..matrix.model import Case

RESULT_FORMAT = "rig-result/1"
VERDICTS = ("pass", "approximate", "expected", "fail", "error")
#: outcomes that are complete results (everything else is an outcome class of its own)
GOOD_OUTCOMES = ("ok", "simulated")


@dataclass
class CaseResult:
    case: Case
    outcome: str
    findings: list[Finding] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    verdict: str = "pass"
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
    #: approximate model inputs of the prediction (rig.run.predict.Prediction.approximations)
    approximations: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.case.id

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": RESULT_FORMAT, "id": self.id, "case": self.case.to_json(), "outcome": self.outcome,
            "verdict": self.verdict, "unexpected": self.unexpected, "duration_s": round(self.duration_s, 4),
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
            case=Case.from_json(d["case"]), outcome=d["outcome"],
            findings=[Finding.from_json(f) for f in d.get("findings", [])],
            unexpected=list(d.get("unexpected", [])), verdict=d.get("verdict", "pass"),
            duration_s=float(d.get("duration_s", 0.0)), message=d.get("message", ""),
            qemu_version=d.get("qemu_version"), outcome_issue=IssueRef(oi["id"], oi["title"], oi["link"]) if oi else None,
            words={k: list(v) for k, v in d.get("words", {}).items()}, quirk=d.get("quirk"),
            finished_at=d.get("finished_at", ""), artifacts=d.get("artifacts", ""),
            approximations=list(d.get("approximations", [])),
        )


def judge(result: CaseResult, fail_on: Iterable[str]) -> CaseResult:
    """Fill ``unexpected`` and ``verdict`` from findings, outcome and the matrix's ``fail_on``."""
    fail_on = set(fail_on)
    unexpected = [f"{f.cls}: {f.name} {f.location}" for f in result.findings if f.cls in fail_on]
    if result.outcome not in GOOD_OUTCOMES and result.outcome_issue is None and result.outcome in fail_on:
        unexpected.insert(0, f"{result.outcome}: {result.message}".rstrip(": "))
    result.unexpected = unexpected
    if result.outcome == "rig-error":
        result.verdict = "error"
    elif unexpected:
        result.verdict = "fail"
    elif result.findings or result.outcome not in GOOD_OUTCOMES:
        result.verdict = "expected"
    elif result.approximations:
        result.verdict = "approximate"
        missing = [f"APPROXIMATE: {a}" for a in result.approximations if a not in result.message]
        result.message = "; ".join([result.message, *missing] if result.message else missing)
    else:
        result.verdict = "pass"
    return result
