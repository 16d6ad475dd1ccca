"""Three-way comparison of one case: predicted, configured (QMP) and observed (guest, per CPU mode).

Scope: the registers QEMU reports in ``feature-words``, plus any register the
prediction adds (there is then no configured value); other leaves (sizes,
brand, topology) are not predicted bit by bit.  Volatile fields are cleared in
every view first (rules in ``data/volatile.toml``, :mod:`.normalise`); runtime
bits (OSXSAVE, OSPKE) are compared with what their rule says the guest must
read in each mode (``data/runtime.toml``, :mod:`.runtime`).

Views of a finding: ``guest`` (predicted / configured / observed per mode),
``runtime`` (the probe's CR4 experiments), ``filtered`` (predicted vs QMP
``filtered-features``), ``kvm`` (KVM policy model vs measured supported table).
Every finding is named: feature name (catalogue) and ``leaf.subleaf.REG[bit]``.

Classification of a differing bit (design.md §2), first rule that applies:

* the guest sees something other than QEMU configured (configured != observed,
  or a runtime bit off its rule): ``host-quirk`` when a host quirk was detected
  for the case (e.g. PVM passes the outer host's CPUID through), else
  ``qemu-behaviour`` under TCG (QEMU's CPUID emulation differs from its own
  configuration) or ``kvm-behaviour`` under KVM (KVM changed what QEMU set);
* predicted != configured and the guest agrees with QEMU, a register only the
  prediction has that the guest contradicts, or a filtered-features
  difference: ``model-gap`` (our model of the QEMU/KVM layers is wrong);
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
from ..matrix.model import KnownIssue
from ..results import Case, Finding, FindingClass, IssueRef
from .known import case_fields, match_finding
from .normalise import normalise
from .runtime import RuntimeBit, check_snapshots, default_runtime_rules


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
    """The registers compared: QEMU's (configured) first, then any the prediction adds (levels, vendor)."""
    out: list[tuple[int, int, str]] = []
    seen: set[tuple[int, int, str]] = set()
    for base in (configured, predicted):
        if base is None:
            continue
        for (lf, s), regs in base.items():
            for r in REGISTERS:
                if regs.get(r) is not None and (lf, s, r) not in seen:
                    seen.add((lf, s, r))
                    out.append((lf, s, r))
    return out


def _bits(table: CpuidTable | None, leaf: int, sub: int, reg: str) -> int | None:
    return None if table is None else table.reg(leaf, sub, reg)


def _expected_runtime(rules: tuple[RuntimeBit, ...], leaf: int, sub: int, reg: str, mode: str,
                      base: CpuidTable | None) -> tuple[int, int]:
    """(mask of runtime bits with a rule for ``mode``, their expected values) in one register."""
    mask = val = 0
    if base is None:
        return 0, 0
    for r in rules:
        loc = r.location
        if (loc.leaf, loc.subleaf, loc.reg) != (leaf, sub, reg):
            continue
        e = r.expected(mode, base)
        if e is None:
            continue
        mask |= 1 << loc.bit
        val |= (e & 1) << loc.bit
    return mask, val


def _guest_reference(case: Case, base: CpuidTable | None, qemu_version: str | None, mode: str,
                     vendor: str | None) -> tuple[CpuidTable | None, str]:
    """``base`` through QEMU's guest rules for a guest reading CPUID in ``mode``
    (rig.qemu.model.guest_visible), when the version is known."""
    if base is None or not qemu_version:
        return None, ""
    from ..errors import RigError
    from ..qemu.model import guest_visible

    try:
        return (guest_visible(base, qemu_version, case.accel, case.cpu_arg, mode=mode, vendor=vendor),
                " (after QEMU's guest rules)")
    except RigError as e:
        return None, f" (QEMU guest rules not applied: {e})"


@dataclass(frozen=True)
class Views:
    """The views of one case that are compared.

    ``predicted`` (QEMU model), ``configured`` (QMP ``feature-words``), ``observed``
    (mode -> the guest's table), ``runtime`` (the probe's runtime experiments,
    ``ProbeReport.runtime``, checked by the rules of ``data/runtime.toml``);
    ``predicted_filtered``/``configured_filtered`` (the model's and QMP's
    ``filtered-features``: view ``filtered``); ``kvm_predicted``/``kvm_measured`` (the
    KVM policy model's and the host's measured ``KVM_GET_SUPPORTED_CPUID``: view ``kvm``,
    emulated hosts).
    """

    predicted: CpuidTable | None = None
    configured: CpuidTable | None = None
    observed: Mapping[str, CpuidTable] = field(default_factory=dict)
    runtime: Mapping[str, Iterable[Any]] | None = None
    predicted_filtered: CpuidTable | None = None
    configured_filtered: CpuidTable | None = None
    kvm_predicted: CpuidTable | None = None
    kvm_measured: CpuidTable | None = None


class _Findings:
    """Findings of one case as they are made: named from the catalogue, matched against known issues."""

    def __init__(self, case: Case, known: tuple[KnownIssue, ...], qemu_version: str | None) -> None:
        self.cat = catalogue()
        self.known = known
        self.fields = case_fields(case, qemu_version)
        self.items: list[Finding] = []

    def add(self, loc: Location, layer: str, view: str, p: int | None, c: int | None, o: dict[str, int],
            note: str = "") -> None:
        name = self.cat.name_of(loc.leaf, loc.subleaf, loc.reg, loc.bit)
        issue = match_finding(self.known, self.fields, name=name, location=str(loc), layer=layer, modes=o.keys())
        self.items.append(Finding(loc, name, FindingClass.KNOWN_BUG if issue else layer, layer, view, p, c, o,
                                  IssueRef.of(issue) if issue else None, note))


def compare(case: Case, views: Views, *, quirk: str | None = None, known: Iterable[KnownIssue] = (),
            qemu_version: str | None = None) -> Comparison:
    """Findings of one case; see the module docstring for the views and the classification."""
    out = _Findings(case, tuple(known), qemu_version)
    p_n = normalise(views.predicted) if views.predicted is not None else None
    c_n = normalise(views.configured) if views.configured is not None else None
    o_n = {m: normalise(t) for m, t in views.observed.items()}
    scope = _scope(c_n, p_n)
    rules = default_runtime_rules()
    _guest_view(out, case, scope, p_n, c_n, o_n, rules, quirk, qemu_version)
    guest_layer = FindingClass.QEMU_BEHAVIOUR if case.accel == "tcg" else FindingClass.KVM_BEHAVIOUR
    if views.runtime and (c_n is not None or p_n is not None):
        for mm in check_snapshots(views.runtime, c_n if c_n is not None else p_n, rules):  # type: ignore[arg-type]
            out.add(mm.rule.location, FindingClass.HOST_QUIRK if quirk else guest_layer, "runtime", None, mm.expected,
                    {f"{mm.mode}/{mm.phase}": mm.observed}, quirk or mm.note)
    if views.predicted_filtered is not None and views.configured_filtered is not None:
        for d in views.predicted_filtered.diff(views.configured_filtered):
            out.add(d.location, FindingClass.MODEL_GAP, "filtered", d.a, d.b, {},
                    "filtered-features: predicted " + ("filtered" if d.a else "kept") + ", QEMU " +
                    ("filtered" if d.b else "kept"))
    if views.kvm_predicted is not None and views.kvm_measured is not None:
        for d in normalise(views.kvm_predicted).diff(normalise(views.kvm_measured)):
            out.add(d.location, FindingClass.KVM_BEHAVIOUR, "kvm", d.a, d.b, {},
                    "KVM policy model vs measured KVM_GET_SUPPORTED_CPUID")
    return Comparison(out.items, scope, quirk)


def _guest_view(out: _Findings, case: Case, scope: list[tuple[int, int, str]], p_n: CpuidTable | None,
                c_n: CpuidTable | None, o_n: dict[str, CpuidTable], rules: tuple[RuntimeBit, ...], quirk: str | None,
                qemu_version: str | None) -> None:
    """Findings of view ``guest``: predicted vs configured vs what the guest must read in each mode."""
    # what the guest must read, per mode: QEMU's configuration through its CPUID emulation's guest rules
    # (the vendor, which some rules depend on, is the predicted one, else what the guest reads in leaf 0)
    vendor = p_n.vendor if p_n is not None else None
    if vendor is None:
        vendor = next((t.vendor for t in o_n.values() if t.vendor), None)
    g_by_mode: dict[str, CpuidTable | None] = {}
    g_note = ""
    for m in o_n:
        g_by_mode[m], g_note = _guest_reference(case, c_n if c_n is not None else p_n, qemu_version, m, vendor)
    guest_layer = FindingClass.QEMU_BEHAVIOUR if case.accel == "tcg" else FindingClass.KVM_BEHAVIOUR
    for leaf, sub, reg in scope:
        pv, cv = _bits(p_n, leaf, sub, reg), _bits(c_n, leaf, sub, reg)
        ov = {m: t.value(leaf, sub, reg) for m, t in o_n.items()}
        # per mode: what the guest must read (QEMU's value; runtime bits by their rules)
        refs: dict[str, int] = {}
        rt_masks: dict[str, int] = {}
        for m in ov:
            g = g_by_mode.get(m)
            ref = _bits(g, leaf, sub, reg) if g is not None else None
            if ref is None:
                ref = cv if cv is not None else pv
            rmask, rval = _expected_runtime(rules, leaf, sub, reg, m, c_n if c_n is not None else p_n)
            rt_masks[m] = rmask
            if ref is not None:
                refs[m] = (ref & ~rmask) | rval
        diff = 0
        if pv is not None and cv is not None:
            diff |= pv ^ cv
        for m, v in ov.items():
            if m in refs:
                diff |= refs[m] ^ v
        while diff:
            low = diff & -diff
            bit = low.bit_length() - 1
            diff ^= low
            p = None if pv is None else (pv >> bit) & 1
            c = None if cv is None else (cv >> bit) & 1
            o = {m: (v >> bit) & 1 for m, v in ov.items()}
            guest_off = [m for m, x in o.items() if m in refs and x != (refs[m] >> bit) & 1]
            runtime_bit = any(rt_masks.get(m, 0) >> bit & 1 for m in guest_off)
            layer, note = _classify_bit(guest_off, c, runtime_bit, quirk, guest_layer, g_note)
            out.add(Location(leaf, sub, reg, bit), layer, "guest", p, c, o, note)


def _classify_bit(guest_off: list[str], configured: int | None, runtime_bit: bool, quirk: str | None,
                  guest_layer: FindingClass, g_note: str) -> tuple[FindingClass, str]:
    """(class, note) of one differing bit of the guest view (module docstring: first rule that applies)."""
    if guest_off and (configured is not None or runtime_bit):
        if quirk:
            return FindingClass.HOST_QUIRK, quirk
        if runtime_bit:
            return guest_layer, f"runtime bit differs from its rule (rig/compare/data/runtime.toml) in {', '.join(guest_off)}"
        return guest_layer, "guest sees other than QEMU configured" + g_note
    if guest_off and quirk:
        # the guest does not read QEMU's CPUID at all: its view says nothing about the model
        return FindingClass.HOST_QUIRK, quirk
    if guest_off:
        return FindingClass.MODEL_GAP, "no QMP view; guest differs from prediction"
    return FindingClass.MODEL_GAP, "QEMU configured other than predicted; the guest agrees with QEMU"
