"""The host kernel's capabilities (boot_cpu_has / boot_cpu_has_bug) for a profile.

Real profiles carry /proc/cpuinfo ``flags`` and ``bugs``; those are read by
name through the policy's feature table (cpuinfo names per kernel version).
What /proc/cpuinfo cannot tell -- flags the kernel hides, or all of them for
profiles without kernel caps (libvirt dumps, ``cpuid -r`` imports) -- is
*assumed* with the chosen kernel version's rules:

* hardware words (those with a CPUID location in ``reverse_cpuid``-style word
  table): the raw CPUID bit;
* scattered features: the raw bit named by scattered.c's table;
* synthesized features and bugs: the small rule set in
  ``data/assumed-caps.json`` (vendor, family/model, Zen generation), each with
  the kernel function it comes from.

Every assumed flag carries its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..cpuid.table import CpuidTable
from ..host.profile import HostProfile, KernelInfo
from . import cond
from .model import Policy


@dataclass
class KernelCaps:
    features: set[str] = field(default_factory=set)
    bugs: set[str] = field(default_factory=set)
    #: name (feature or "bug:NAME") -> why the rig assumed it
    assumed: dict[str, str] = field(default_factory=dict)
    #: features known (read or derived) as absent, with reason, for explain
    absent_reasons: dict[str, str] = field(default_factory=dict)
    from_profile: bool = False

    def has(self, name: str) -> bool:
        return name in self.features

    def has_bug(self, name: str) -> bool:
        return name in self.bugs

    def why(self, name: str) -> str | None:
        return self.assumed.get(name)


@cache
def _rules() -> dict[str, Any]:
    return json.loads(resources.files("rig.policy").joinpath("data/assumed-caps.json").read_text())


def signature(raw: CpuidTable) -> tuple[int, int, int]:
    """(family, model, stepping) with the extended fields folded in (SDM/APM rules)."""
    eax = raw.value(1, 0, "eax")
    fam = (eax >> 8) & 0xF
    model = (eax >> 4) & 0xF
    step = eax & 0xF
    if fam == 0xF:
        fam += (eax >> 20) & 0xFF
    if fam >= 6:
        model |= ((eax >> 16) & 0xF) << 4
    return fam, model, step


#: IA32_ARCH_CAPABILITIES (MSR 0x10a) bits the rules read (Intel SDM vol. 4; msr-index.h)
ARCH_CAP_MSR, ARCH_CAP_IBRS_ALL, ARCH_CAP_PBRSB_NO = 0x10A, 1 << 1, 1 << 24
#: cpu_vuln_whitelist NO_EIBRS_PBRSB Intel models (family 6): Goldmont Plus, Tremont D, Tremont, Tremont L
INTEL_NO_EIBRS_PBRSB = (0x7A, 0x86, 0x96, 0x9C)


def facts(raw: CpuidTable, msrs: dict[int, int] | None = None) -> dict[str, bool]:
    vendor = raw.vendor or ""
    fam, model, _ = signature(raw)
    f = {
        "vendor_amd": vendor == "AuthenticAMD",
        "vendor_intel": vendor == "GenuineIntel",
        "vendor_hygon": vendor == "HygonGenuine",
        "hypervisor": bool(raw.value(1, 0, "ecx") >> 31 & 1),
        "family_15h": fam == 0x15,
        "family_16h": fam == 0x16,
        "family_17h": fam == 0x17,
        "family_18h": fam == 0x18,
        "family_19h": fam == 0x19,
        "family_1ah": fam == 0x1A,
        "invariant_tsc": bool(raw.value(0x80000007, 0, "edx") >> 8 & 1) if raw.max_extended >= 0x80000007 else False,
        "intel_no_eibrs_pbrsb": vendor == "GenuineIntel" and fam == 6 and model in INTEL_NO_EIBRS_PBRSB,
    }
    arch_cap = (msrs or {}).get(ARCH_CAP_MSR, 0)
    f["arch_cap_ibrs_all"] = bool(arch_cap & ARCH_CAP_IBRS_ALL)
    f["arch_cap_pbrsb_no"] = bool(arch_cap & ARCH_CAP_PBRSB_NO)
    for g in range(1, 7):
        f[f"zen{g}"] = False
    if f["vendor_amd"]:
        for rf, lo, hi, gen in _rules()["zen"]["ranges"]:
            if fam == rf and lo <= model <= hi:
                f[f"zen{gen}"] = True
    return f


def raw_bit(raw: CpuidTable, leaf: int, subleaf: int, reg: str, bit: int) -> int:
    """The raw CPUID bit, 0 when the leaf is beyond the host's max for its range."""
    base = leaf & 0xFFFF0000
    maxleaf = raw.value(base, 0, "eax")
    if leaf > maxleaf:
        return 0
    return (raw.value(leaf, subleaf, reg) >> bit) & 1


def _assume_hw(policy: Policy, raw: CpuidTable, caps: KernelCaps, names: set[str] | None) -> None:
    scattered = {s.feature: s for s in policy.scattered}
    for name, f in policy.features.items():
        if not f.kernel or (names is not None and name not in names):
            continue
        w = policy.words.get(f.word)
        if w is not None and w.kernel and w.leaf is not None and w.reg is not None:
            if raw_bit(raw, w.leaf, w.subleaf, w.reg, f.bit):
                caps.features.add(name)
                caps.assumed[name] = f"raw CPUID {w.name} bit {f.bit} (hardware word)"
            else:
                caps.absent_reasons[name] = f"raw CPUID {w.name} bit {f.bit} is 0"
        elif name in scattered:
            s = scattered[name]
            if raw_bit(raw, s.leaf, s.subleaf, s.reg, s.bit):
                caps.features.add(name)
                caps.assumed[name] = (f"raw CPUID 0x{s.leaf:x}.{s.subleaf}.{s.reg.upper()}[{s.bit}] "
                                      "(arch/x86/kernel/cpu/scattered.c)")
            else:
                caps.absent_reasons[name] = f"raw CPUID 0x{s.leaf:x}.{s.subleaf}.{s.reg.upper()}[{s.bit}] is 0 (scattered.c)"


def _version_ok(rule: dict[str, Any], policy: Policy) -> bool:
    from .store import version_key

    v = version_key(policy.version)[:2]
    if "kernels" in rule:
        return any(version_key(lo)[:2] <= v and (hi is None or v <= version_key(hi)[:2]) for lo, hi in rule["kernels"])
    if rule.get("since") and v < version_key(rule["since"])[:2]:
        return False
    if rule.get("before") and v >= version_key(rule["before"])[:2]:
        return False
    return True


def profile_msrs(profile: HostProfile) -> dict[int, int]:
    """MSRs a profile recorded (libvirt dumps: ``notes.msrs``), by index."""
    out = {}
    for k, v in (profile.notes.get("msrs") or {}).items():
        try:
            out[int(str(k), 0)] = int(str(v), 0)
        except ValueError:
            continue
    return out


def _apply_rules(policy: Policy, raw: CpuidTable, caps: KernelCaps, names: set[str] | None,
                 cmdline: str | None = None, msrs: dict[int, int] | None = None) -> None:
    fx = facts(raw, msrs)
    words = (cmdline or "").split()
    fx["mitigations_off"] = "mitigations=off" in words

    def value(a: cond.Atom) -> bool:
        if a.kind == "has":
            return a.arg in caps.features
        if a.kind == "bug":
            return a.arg in caps.bugs
        if a.kind == "var":
            return fx.get(a.arg, False)
        if a.kind == "config":
            return True
        return False

    for rule in _rules()["rules"]:
        if not _version_ok(rule, policy):
            continue
        node = cond.parse(rule["when"], "assumed-caps.json")
        hit = cond.evaluate(node, value)
        span = "".join(f" [{k} {rule[k]}]" for k in ("since", "before") if rule.get(k))
        if "kernels" in rule:
            span += " [kernels " + ", ".join(f"{lo}..{hi or ''}" for lo, hi in rule["kernels"]) + "]"
        why = f"assumed: {rule['src']} ({rule['when']}){span}"
        for name in rule.get("set", []):
            if name not in policy.features or (names is not None and name not in names):
                continue
            if hit:
                caps.features.add(name)
                caps.assumed[name] = why
                caps.absent_reasons.pop(name, None)
            elif name not in caps.features:
                caps.absent_reasons[name] = f"not synthesized: {rule['src']} ({rule['when']} is false)"
        for name in rule.get("clear", []):
            if hit and name in caps.features and (names is None or name in names):
                caps.features.discard(name)
                caps.absent_reasons[name] = why
        for name in rule.get("bug", []):
            if name not in policy.bugs or (names is not None and f"bug:{name}" not in names):
                continue
            if hit:
                caps.bugs.add(name)
                caps.assumed[f"bug:{name}"] = why


def kernel_caps(profile: HostProfile, policy: Policy) -> KernelCaps:
    """Kernel caps for evaluation: read from the profile, assumed where unknown."""
    k = profile.kernel
    if not k.flags or k.assumed:
        if k.flags and k.assumed:
            caps = _from_flags(k, policy)
            caps.assumed.update(k.assumed_reasons)
            return caps
        return derive(profile.raw, policy, k.cmdline, profile_msrs(profile))
    caps = _from_flags(k, policy)
    caps.from_profile = True
    # flags /proc/cpuinfo does not show: assume them from raw CPUID and rules
    hidden = {n for n, f in policy.features.items() if f.kernel and not f.cpuinfo}
    hidden |= {f"bug:{n}" for n, b in policy.bugs.items() if not b.cpuinfo}
    _assume_hw(policy, profile.raw, caps, hidden)
    _apply_rules(policy, profile.raw, caps, hidden, k.cmdline, profile_msrs(profile))
    for n in list(caps.assumed):
        caps.assumed[n] += " -- hidden from /proc/cpuinfo on this kernel version"
    return caps


def _from_flags(k: KernelInfo, policy: Policy) -> KernelCaps:
    caps = KernelCaps()
    for flag in k.flags:
        name = policy.by_cpuinfo(flag) or (flag.upper() if flag.upper() in policy.features else None)
        if name:
            caps.features.add(name)
    bug_names = {b.cpuinfo: n for n, b in policy.bugs.items() if b.cpuinfo}
    for bug in k.bugs:
        name = bug_names.get(bug) or (bug.upper() if bug.upper() in policy.bugs else None)
        if name:
            caps.bugs.add(name)
    return caps


def derive(raw: CpuidTable, policy: Policy, cmdline: str | None = None, msrs: dict[int, int] | None = None) -> KernelCaps:
    caps = KernelCaps()
    _assume_hw(policy, raw, caps, None)
    _apply_rules(policy, raw, caps, None, cmdline, msrs)
    return caps


def assume_kernel_caps(profile: HostProfile, policy: Policy) -> KernelInfo:
    """Kernel caps derived from raw CPUID with ``policy``'s rules, marked assumed.

    ``flags`` uses the version's /proc/cpuinfo names (lower-case X86_FEATURE
    names for flags that version hides); ``assumed_reasons`` says why each
    flag was assumed.
    """
    caps = derive(profile.raw, policy, profile.kernel.cmdline, profile_msrs(profile))
    flags, reasons = [], {}
    for name in sorted(caps.features):
        f = policy.features[name]
        shown = f.cpuinfo or name.lower()
        flags.append(shown)
        reasons[shown] = caps.assumed.get(name, "assumed")
    bugs = []
    for name in sorted(caps.bugs):
        b = policy.bugs[name]
        shown = b.cpuinfo or name.lower()
        bugs.append(shown)
        reasons[f"bug:{shown}"] = caps.assumed.get(f"bug:{name}", "assumed")
    return KernelInfo(release=profile.kernel.release, flags=flags, bugs=bugs, assumed=True, assumed_reasons=reasons,
                      cmdline=profile.kernel.cmdline)
