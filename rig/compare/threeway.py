"""Three-way comparison of one case: predicted, configured (QMP) and observed (guest, per CPU mode).

Scope: the registers QEMU reports in ``feature-words`` (or, without QMP, the
registers the prediction covers); other leaves (sizes, brand, topology) are not
predicted bit by bit.  Volatile fields are cleared first (:mod:`.normalise`).

Classification of a differing bit (design.md §2), first rule that applies:

* the guest sees something other than QEMU configured (configured != observed):
  ``host-quirk`` when a host quirk was detected for the case (e.g. PVM passes
  the outer host's CPUID through), else ``qemu-behaviour`` under TCG (QEMU's
  CPUID emulation differs from its own configuration) or ``kvm-behaviour``
  under KVM (KVM changed what QEMU set);
* predicted != configured and the guest agrees with QEMU: ``model-gap`` (our
  model of the QEMU/KVM layers is wrong);
* for emulated hosts, a bit where the KVM policy model disagrees with the L1
  kernel's measured ``KVM_GET_SUPPORTED_CPUID``: ``kvm-behaviour`` (view "kvm").

A finding that matches a known issue becomes ``known-bug`` (keeping ``layer``,
the class it would otherwise have, and the issue's link).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cpuid.catalogue import catalogue
from ..cpuid.table import REGISTERS, CpuidTable, Location
from ..matrix.model import Case, KnownIssue
from .known import case_fields, match_finding
from .normalise import normalise


@dataclass(frozen=True)
class IssueRef:
    id: str
    title: str
    link: str

    @classmethod
    def of(cls, issue: KnownIssue) -> IssueRef:
        return cls(issue.id, issue.title, issue.link)


@dataclass(frozen=True)
class Finding:
    location: Location
    name: str
    cls: str                 # model-gap | qemu-behaviour | kvm-behaviour | host-quirk | known-bug
    layer: str               # the class before known-issue matching
    view: str                # "guest" (predicted/configured/observed) or "kvm" (policy vs measured)
    predicted: int | None
    configured: int | None
    observed: dict[str, int] = field(default_factory=dict)  # mode -> bit
    issue: IssueRef | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.view}:{self.location}"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "location": str(self.location), "leaf": self.location.leaf, "subleaf": self.location.subleaf,
            "reg": self.location.reg, "bit": self.location.bit, "name": self.name, "class": self.cls,
            "layer": self.layer, "view": self.view, "predicted": self.predicted, "configured": self.configured,
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
            cls=d["class"], layer=d["layer"], view=d["view"], predicted=d.get("predicted"),
            configured=d.get("configured"), observed=dict(d.get("observed", {})),
            issue=IssueRef(iss["id"], iss["title"], iss["link"]) if iss else None, note=d.get("note", ""),
        )


@dataclass
class Comparison:
    findings: list[Finding]
    #: registers compared: (leaf, subleaf, reg)
    scope: list[tuple[int, int, str]]
    quirk: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "scope": [[lf, s, r] for lf, s, r in self.scope],
            "quirk": self.quirk,
        }


def _scope(configured: CpuidTable | None, predicted: CpuidTable | None) -> list[tuple[int, int, str]]:
    base = configured if configured is not None else predicted
    if base is None:
        return []
    return [(lf, s, r) for (lf, s), regs in base.items() for r in REGISTERS if regs.get(r) is not None]


def _bits(table: CpuidTable | None, leaf: int, sub: int, reg: str) -> int | None:
    return None if table is None else table.reg(leaf, sub, reg)


def compare(
    case: Case,
    *,
    predicted: CpuidTable | None,
    configured: CpuidTable | None,
    observed: Mapping[str, CpuidTable],
    quirk: str | None = None,
    known: Iterable[KnownIssue] = (),
    qemu_version: str | None = None,
    kvm_predicted: CpuidTable | None = None,
    kvm_measured: CpuidTable | None = None,
) -> Comparison:
    known = tuple(known)
    cat = catalogue()
    fields = case_fields(case, qemu_version)
    p_n = normalise(predicted) if predicted is not None else None
    c_n = normalise(configured) if configured is not None else None
    o_n = {m: normalise(t) for m, t in observed.items()}
    scope = _scope(c_n, p_n)
    findings: list[Finding] = []

    def add(loc: Location, layer: str, view: str, p: int | None, c: int | None, o: dict[str, int], note: str = "") -> None:
        name = cat.name_of(loc.leaf, loc.subleaf, loc.reg, loc.bit)
        issue = match_finding(known, fields, name=name, location=str(loc), layer=layer, modes=o.keys())
        findings.append(Finding(loc, name, "known-bug" if issue else layer, layer, view, p, c, o,
                                IssueRef.of(issue) if issue else None, note))

    for leaf, sub, reg in scope:
        pv, cv = _bits(p_n, leaf, sub, reg), _bits(c_n, leaf, sub, reg)
        ov = {m: t.value(leaf, sub, reg) for m, t in o_n.items()}
        diff = 0
        if pv is not None and cv is not None:
            diff |= pv ^ cv
        ref = cv if cv is not None else pv
        for v in ov.values():
            if ref is not None:
                diff |= ref ^ v
        while diff:
            low = diff & -diff
            bit = low.bit_length() - 1
            diff ^= low
            p = None if pv is None else (pv >> bit) & 1
            c = None if cv is None else (cv >> bit) & 1
            o = {m: (v >> bit) & 1 for m, v in ov.items()}
            loc = Location(leaf, sub, reg, bit)
            if c is not None and any(x != c for x in o.values()):
                layer = "host-quirk" if quirk else ("qemu-behaviour" if case.accel == "tcg" else "kvm-behaviour")
                note = quirk or ("guest sees other than QEMU configured")
            elif c is None and p is not None and any(x != p for x in o.values()):
                layer, note = "model-gap", "no QMP view; guest differs from prediction"
            else:
                layer, note = "model-gap", "QEMU configured other than predicted; the guest agrees with QEMU"
            add(loc, layer, "guest", p, c, o, note)

    if kvm_predicted is not None and kvm_measured is not None:
        for d in normalise(kvm_predicted).diff(normalise(kvm_measured)):
            add(d.location, "kvm-behaviour", "kvm", d.a, d.b, {}, "KVM policy model vs measured KVM_GET_SUPPORTED_CPUID")
    return Comparison(findings, scope, quirk)
