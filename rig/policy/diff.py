"""``rig policy diff A B``: rules that changed between two kernel versions' policies."""

from __future__ import annotations

from dataclasses import dataclass

from ..host.profile import HostProfile
from .model import Policy, Step
from .predict import Difference, compare_supported, predict_supported

_FN = {"init": "kvm_cpu_cap_init", "mask": "kvm_cpu_cap_mask", "init_kvm_defined": "kvm_cpu_cap_init_kvm_defined",
       "set": "kvm_cpu_cap_set", "clear": "kvm_cpu_cap_clear", "check_and_set": "kvm_cpu_cap_check_and_set"}


def _macro_text(p: Policy, macro: str) -> str:
    if macro == "SYNTHESIZED_F" and p.synthesized:
        return f"SYNTHESIZED_F[{p.synthesized}]"
    return macro


#: pre-6.14 spellings with the same meaning as a 6.14+ macro (F in a mask/kvm-defined init == F in kvm_cpu_cap_init)
_SAME = {"SF": "SCATTERED_F", "ALIASED_1_EDX_F": "F"}
#: macros that set nothing (documentation of vendor/runtime bits)
_NOTHING = ("VENDOR_F", "RUNTIME_F")


def feature_rules(p: Policy) -> dict[str, list[str]]:
    """feature -> the rules that touch it, in order, era-neutral and without line numbers.

    ``kvm_cpu_cap_mask(W, F(x))`` and ``kvm_cpu_cap_init(W, F(x))`` mean the
    same (kernel caps & raw in kernel words, raw in KVM-only words), so both
    read ``F``; the common function is ``common`` in both eras.
    """
    out: dict[str, list[str]] = {}

    def walk(steps: list[Step], where: str) -> None:
        for s in steps:
            if s.op == "call":
                continue
            if s.op in ("init", "mask", "init_kvm_defined"):
                for macro, f in s.features:
                    if macro in _NOTHING:
                        continue
                    out.setdefault(f, []).append(f"{where}: {_macro_text(p, _SAME.get(macro, macro))}")
            elif s.feature:
                out.setdefault(s.feature, []).append(
                    f"{where}: {_FN[s.op]}" + (f" if {s.cond}" if s.cond else ""))

    walk(p.common, "common")
    for v, steps in sorted(p.vendors.items()):
        walk(steps, v)
    return out


@dataclass(frozen=True)
class RuleChange:
    feature: str
    a: list[str]
    b: list[str]


def _by_location(p: Policy) -> dict[object, tuple[str, list[str]]]:
    """Rules keyed by CPUID location (so renamed or unnamed bits line up), else by name."""
    out: dict[object, tuple[str, list[str]]] = {}
    for f, rules in feature_rules(p).items():
        loc = p.location(f) if f in p.features else None
        out[loc or f] = (f, rules)
    return out


def rule_changes(a: Policy, b: Policy) -> list[RuleChange]:
    ra, rb = _by_location(a), _by_location(b)
    out = []
    for key in set(ra) | set(rb):
        na, x = ra.get(key, ("", []))
        nb, y = rb.get(key, ("", []))
        if x != y:
            name = nb or na
            if na and nb and na != nb:
                name = f"{nb} (linux-{a.version}: {na})"
            out.append(RuleChange(name, x, y))
    return sorted(out, key=lambda c: c.feature)


def _nosrc(v: object) -> object:
    if isinstance(v, dict):
        return {k: _nosrc(x) for k, x in v.items() if k != "src"}
    return v


def leaf_changes(a: Policy, b: Policy) -> list[tuple[str, object, object]]:
    """Per-leaf parameters that differ; lists as (removed, added)."""
    out: list[tuple[str, object, object]] = []
    for k in sorted(set(a.leaves) | set(b.leaves)):
        if k == "src":
            continue
        x, y = _nosrc(a.leaves.get(k)), _nosrc(b.leaves.get(k))
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list):
            out.append((k, "removed " + (", ".join(map(str, [i for i in x if i not in y])) or "none"),
                        "added " + (", ".join(map(str, [i for i in y if i not in x])) or "none")))
        else:
            out.append((k, x, y))
    return out


def supported_changes(profile: HostProfile, a: Policy, b: Policy,
                      params: dict[str, str] | None = None) -> list[Difference]:
    pa = predict_supported(profile, a, params)
    pb = predict_supported(profile, b, params)
    return compare_supported(pa.table, pb.table, b)


def render(a: Policy, b: Policy, profile: HostProfile | None, params: dict[str, str] | None = None) -> str:
    lines = [f"policy {a.label} -> {b.label}"]
    if (a.era, a.synthesized) != (b.era, b.synthesized):
        lines.append(f"  macro semantics: {a.era}/{a.synthesized or '-'} -> {b.era}/{b.synthesized or '-'}")
    changes = rule_changes(a, b)
    lines.append(f"  {len(changes)} feature(s) whose KVM rules changed:")
    for c in changes:
        lines.append(f"    {c.feature}")
        lines.append(f"      {a.version}: " + ("; ".join(c.a) if c.a else "(no rule: never advertised)"))
        lines.append(f"      {b.version}: " + ("; ".join(c.b) if c.b else "(no rule: never advertised)"))
    lc = leaf_changes(a, b)
    if lc:
        lines.append(f"  {len(lc)} per-leaf parameter(s) of __do_cpuid_func changed:")
        for k, x, y in lc:
            lines.append(f"    {k}: {_short(x)} -> {_short(y)}")
    if profile is not None:
        diffs = supported_changes(profile, a, b, params)
        lines.append(f"  on profile {profile.name or '?'}: {len(diffs)} supported bit(s) change")
        for d in diffs:
            lines.append(f"    {d.feature or '(unnamed)'} {d.location}: {d.predicted} -> {d.measured}")
    return "\n".join(lines)


def _short(v: object) -> str:
    if isinstance(v, int) and v > 9:
        return hex(v)
    s = str(v)
    return s if len(s) < 100 else s[:97] + "..."
