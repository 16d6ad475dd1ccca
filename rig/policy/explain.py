"""``rig policy explain``: one bit's journey through KVM's policy, in words."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..cpuid.table import REGISTERS, Location
from .evaluate import TraceStep
from .model import Policy, PolicyError
from .predict import Prediction

_LOC = re.compile(r"^(0x[0-9a-fA-F]+|\d+)(?:\.(0x[0-9a-fA-F]+|\d+))?\.(eax|ebx|ecx|edx)\[(\d+)\]$", re.I)


@dataclass(frozen=True)
class Target:
    location: Location
    feature: str | None  # X86_FEATURE name when known


def resolve(policy: Policy, text: str) -> Target:
    """A feature name (kernel or /proc/cpuinfo spelling) or ``LEAF[.SUB].REG[BIT]``."""
    m = _LOC.match(text.strip())
    if m:
        leaf, sub = int(m.group(1), 0), int(m.group(2) or "0", 0)
        reg, bit = m.group(3).lower(), int(m.group(4))
        if reg not in REGISTERS or not 0 <= bit < 32:
            raise PolicyError(f"bad location {text!r} (expected e.g. 0x80000021.0.ecx[1])")
        w = policy.word_at(leaf, sub, reg)
        return Target(Location(leaf, sub, reg, bit), policy.feature_at(w.name, bit) if w else None)
    f = policy.feature(text)
    loc = policy.location(f.name)
    if loc is None:
        raise PolicyError(f"X86_FEATURE_{f.name} is a Linux-defined flag (word {f.word}) with no CPUID location; "
                          "KVM never reports it", hint="explain a hardware feature or a LEAF.SUB.REG[BIT]")
    return Target(Location(*loc), f.name)


def render(pred: Prediction, target: Target, selection: str) -> str:
    p = pred.policy
    loc = target.location
    steps: list[TraceStep] = pred.trace(loc.leaf, loc.subleaf, loc.reg, loc.bit)
    name = f"X86_FEATURE_{target.feature}" if target.feature else "(no kernel name)"
    f = p.features.get(target.feature or "")
    extra = f" (/proc/cpuinfo \"{f.cpuinfo}\")" if f and f.cpuinfo else ""
    lines = [f"{name}{extra} at CPUID {loc}", f"  {selection}; macro era: {_era(p)}"]
    if p.hand_written:
        lines.append(f"  hand-written variant of linux-{p.variant_of}: {p.description}")
        for k, v in p.commits.items():
            lines.append(f"    commit {k}: {v}")
    width = max(len(s.layer) for s in steps)
    for s in steps:
        val = "" if s.value is None else f" -> {s.value}"
        lines.append(f"  {s.layer:<{width}}  {s.text}{val}")
        if s.src:
            lines.append(f"  {'':<{width}}    at {s.src}")
    for n in pred.notes:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def _era(p: Policy) -> str:
    if p.era == "cap_init":
        sem = {"fixed": "fixed SYNTHESIZED_F (features only if the kernel has the flag; fix: mainline 4b3b8a8b0df1, "
                        "7.0-rc3)",
               "prefix": "pre-fix SYNTHESIZED_F (features |= bit unconditionally, 31272abd5974 in 6.16 until the fix "
                         "4b3b8a8b0df1 in 7.0-rc3)"}.get(p.synthesized or "", "")
        return "kvm_cpu_cap_init() (6.14+)" + (f", {sem}" if sem else "")
    return "kvm_cpu_cap_mask()/kvm_cpu_cap_init_kvm_defined() (before 6.14)"
