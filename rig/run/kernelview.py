"""The kernel's view of an OS guest (linux, ssh): its /proc/cpuinfo flags against the CPUID bits its user mode read.

Both guests run the user-mode probe under a Linux kernel; :func:`rig.run.assemble.assemble`
compares what they saw like a probe case: predicted (QEMU model), configured (QMP) and
observed = the probe's ``user`` table.  The runtime
bits the guest kernel sets (OSXSAVE, OSPKE) follow their rules in
``rig/compare/data/runtime.toml`` (mode ``user`` = "follows"); the
XCR0-dependent 0xD sizes are volatile (``rig/compare/data/volatile.toml``).

A fourth view, ``kernel`` (in ``views.json``, informational, never a finding):
the guest kernel's ``/proc/cpuinfo`` flags against the CPUID bits its user mode
read, by :func:`kernel_view`, with the kernel's own flag rules from
``rig/run/data/kernel_flags.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..cpuid.catalogue import catalogue
from ..cpuid.table import CpuidTable
from ..errors import RigError

# ------------------------------------------------------------------ the kernel's view


@dataclass(frozen=True)
class KernelFlagRule:
    flag: str
    kind: str            # "implied" (the kernel sets it without its CPUID bit) | "optional" (may be cleared)
    when: str            # "", "vendor=<vendor>", "cpuid=<catalogue feature>", or a cpuinfo flag that must be shown
    reason: str


@cache
def kernel_flag_rules() -> tuple[KernelFlagRule, ...]:
    text = resources.files("rig.run").joinpath("data/kernel_flags.toml").read_text()
    try:
        d = tomllib.loads(text)
        rules = tuple(KernelFlagRule(str(r["flag"]), str(r["kind"]), str(r.get("when", "")), str(r["reason"]))
                      for r in d.get("rule", []))
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise RigError(f"rig/run/data/kernel_flags.toml: bad rule file: {e}") from None
    bad = [r.kind for r in rules if r.kind not in ("implied", "optional")]
    if bad:
        raise RigError(f"rig/run/data/kernel_flags.toml: kind {bad[0]!r} is not 'implied' or 'optional'")
    return rules


def _applies(rule: KernelFlagRule, vendor: str | None, flags: set[str], table: CpuidTable) -> bool:
    if not rule.when:
        return True
    key, _, value = rule.when.partition("=")
    if key == "vendor":
        return vendor == value
    if key == "cpuid":
        f = catalogue().lookup(value)
        return f is not None and bool(table.bit(f.leaf, f.subleaf, f.reg, f.bit))
    return rule.when in flags


def kernel_view(table: CpuidTable, cpuinfo_flags: Iterable[str], *,
                rules: Iterable[KernelFlagRule] | None = None) -> dict[str, Any]:
    """The guest kernel's /proc/cpuinfo flags against the CPUID bits its user mode read.

    Only flags with a CPUID location in the table count.  ``cpuid_only``: bit set, flag absent;
    ``cpuinfo_only``: flag shown, bit clear; both after the kernel flag rules (``explained``).
    """
    flags = set(cpuinfo_flags)
    rules = tuple(kernel_flag_rules() if rules is None else rules)
    vendor = table.vendor
    bits: dict[str, bool] = {}
    for f in catalogue().features:
        if f.cpuinfo and table.reg(f.leaf, f.subleaf, f.reg) is not None:
            bits[f.cpuinfo] = bits.get(f.cpuinfo, False) or bool(table.bit(f.leaf, f.subleaf, f.reg, f.bit))
    cpuid_only = sorted(n for n, on in bits.items() if on and n not in flags)
    cpuinfo_only = sorted(n for n, on in bits.items() if not on and n in flags)
    explained: dict[str, str] = {}
    for r in rules:
        if not _applies(r, vendor, flags, table):
            continue
        if r.kind == "implied" and r.flag in cpuinfo_only:
            cpuinfo_only.remove(r.flag)
            explained[r.flag] = r.reason
        elif r.kind == "optional" and r.flag in cpuid_only:
            cpuid_only.remove(r.flag)
            explained[r.flag] = r.reason
    return {"compared": len(bits), "cpuid_only": cpuid_only, "cpuinfo_only": cpuinfo_only, "explained": explained}


def kernel_view_note(view: Mapping[str, Any] | None) -> str:
    if not view:
        return ""
    parts = []
    if view["cpuid_only"]:
        parts.append("CPUID without /proc/cpuinfo flag: " + " ".join(view["cpuid_only"]))
    if view["cpuinfo_only"]:
        parts.append("/proc/cpuinfo flag without CPUID bit: " + " ".join(view["cpuinfo_only"]))
    return "kernel view: " + "; ".join(parts) if parts else ""
