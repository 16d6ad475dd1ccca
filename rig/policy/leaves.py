"""Per-leaf rules of ``__do_cpuid_func()``: from KVM's caps to the supported table.

``KVM_GET_SUPPORTED_CPUID`` walks 0..max basic, 0x40000000..0x40000001 and
0x80000000..max extended (and 0xC0000000.. on Centaur/Zhaoxin), starting from
the host's CPUID and rewriting each leaf by a per-leaf rule.  The version
differences (max leaves, subleaf limits, which ``case`` labels exist, which
caps words override which registers, KVM_SUPPORTED_XCR0/XSS, the host
kernel's xfeatures) are parameters in the policy's ``leaves`` section, read
from the tree by :mod:`.importer_leaves`; the rules themselves follow
arch/x86/kvm/cpuid.c and are written here once.

Approximations (no profile records them): the PMU leaves 0xA/0x80000022 use
the host's CPUID clamped to KVM's limits (version 2, 8 GP, 3 fixed counters:
arch/x86/kvm/pmu.c kvm_init_pmu_capability) instead of perf's answer;
GuestPhysAddrSize assumes 5-level TDP iff the kernel has LA57; KVM_FEATURE_
STEAL_TIME assumes ``sched_info_on()`` (Debian kernels enable schedstats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cpuid.table import CpuidTable, Regs
from .evaluate import CapsResult
from .kernelcaps import KernelCaps
from .model import Policy

KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"
SRC = "arch/x86/kvm/cpuid.c:__do_cpuid_func"


def genmask(hi: int, lo: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


@dataclass
class LeafNote:
    text: str
    mask: int = 0xFFFFFFFF  # which bits of the register the note is about


@dataclass
class LeafResult:
    table: CpuidTable
    #: (leaf, subleaf, reg) -> notes explaining how the register was produced
    notes: dict[tuple[int, int, str], list[LeafNote]] = field(default_factory=dict)
    #: (leaf, subleaf, reg) -> kvm caps word that overrode it
    overrides: dict[tuple[int, int, str], str] = field(default_factory=dict)


def xstate_size(raw: CpuidTable, mask: int, compacted: bool) -> int:
    """xstate_required_size(): size of the XSAVE area for features ``mask``."""
    ret = 512 + 64
    for i in range(2, 64):
        if not mask >> i & 1:
            continue
        r = raw.get(0xD, i)
        if r is None:
            continue
        size, offset, ecx = r.eax or 0, r.ebx or 0, r.ecx or 0
        if compacted:
            if ecx & 2:
                ret = (ret + 63) & ~63
            ret += size
        else:
            ret = max(ret, offset + size)
    return ret


class LeafBuilder:
    def __init__(self, policy: Policy, raw: CpuidTable, caps: CapsResult, kcaps: KernelCaps,
                 var: Callable[[str], bool], cond: Callable[[str | None], bool] | None = None):
        self.p = policy
        self.L: dict[str, Any] = policy.leaves
        self.raw = raw
        self.caps = caps
        self.k = kcaps
        self.var = var
        self.cond = cond or (lambda text: True)
        self.out = LeafResult(CpuidTable())
        self.cases = set(self.L.get("cases", []))

    def has_case(self, leaf: int) -> bool:
        """Does __do_cpuid_func have a ``case`` for this leaf (else its default zeroes the entry)?"""
        return not self.cases or f"0x{leaf:x}" in self.cases

    # helpers ---------------------------------------------------------------
    def host(self, leaf: int, subleaf: int = 0) -> list[int]:
        base = leaf & 0xFFFF0000
        if base in (0, 0x80000000) and leaf > self.raw.value(base, 0, "eax"):
            return [0, 0, 0, 0]
        r = self.raw.get(leaf, subleaf) or Regs(0, 0, 0, 0)
        return [r.eax or 0, r.ebx or 0, r.ecx or 0, r.edx or 0]

    def cap(self, feature: str) -> bool:
        return self.caps.has(self.p, feature)

    def word(self, name: str) -> int:
        return self.caps.caps.get(name, 0)

    def note(self, leaf: int, subleaf: int, regs: str, text: str, mask: int = 0xFFFFFFFF) -> None:
        for r in regs:
            reg = {"a": "eax", "b": "ebx", "c": "ecx", "d": "edx"}[r]
            self.out.notes.setdefault((leaf, subleaf, reg), []).append(LeafNote(text, mask))

    def emit(self, leaf: int, subleaf: int, v: list[int]) -> None:
        self.out.table.set(leaf, subleaf, Regs(*(x & 0xFFFFFFFF for x in v)))

    def override(self, leaf: int, subleaf: int, v: list[int]) -> None:
        """cpuid_entry_override() for every caps word located at (leaf, subleaf)."""
        for w in self.p.words.values():
            if w.leaf == leaf and w.subleaf == subleaf and w.reg is not None and w.name in self.p.leaves.get(
                    "override_words", [w.name]):
                idx = ("eax", "ebx", "ecx", "edx").index(w.reg)
                v[idx] = self.word(w.name)
                self.out.overrides[(leaf, subleaf, w.reg)] = w.name
                self.note(leaf, subleaf, w.reg[1], f"cpuid_entry_override(entry, {w.name}): register = KVM caps word")

    def zero(self, leaf: int, subleaf: int, why: str) -> list[int]:
        self.note(leaf, subleaf, "abcd", why)
        return [0, 0, 0, 0]

    # the walk ----------------------------------------------------------------
    def build(self) -> LeafResult:
        L = self.L
        host0 = self.host(0)
        maxb = min(host0[0], int(L.get("max_basic", 0x1F)))
        for leaf in range(0, maxb + 1):
            self.basic(leaf, maxb if leaf == 0 else None)
        sig = KVM_SIGNATURE
        self.emit(0x40000000, 0, [0x40000001, int.from_bytes(sig[0:4], "little"),
                                  int.from_bytes(sig[4:8], "little"), int.from_bytes(sig[8:12], "little")])
        self.note(0x40000000, 0, "abcd", "KVM_CPUID_SIGNATURE: max 0x40000001, \"KVMKVMKVM\"")
        eax = 0
        for name, bit in self.p.kvm_features.items():
            cnd = self.p.kvm_features_conditional.get(name)
            if cnd is None or cnd == "sched_info_on()":
                eax |= 1 << bit
        self.emit(0x40000001, 0, [eax, 0, 0, 0])
        self.note(0x40000001, 0, "a", "KVM_CPUID_FEATURES: " + ", ".join(self.p.kvm_features)
                  + " (STEAL_TIME assumes sched_info_on(): Debian kernels enable schedstats/delay accounting)")
        hostx = self.host(0x80000000)
        if hostx[0] >= 0x80000000:
            maxx = min(hostx[0], int(L.get("max_extended", 0x80000021)))
            raise_to = L.get("ext_raise_to")
            if raise_to and maxx >= int(L.get("ext_raise_min", 0x8000001D)) and (
                    self.k.has("LFENCE_RDTSC") or not self.k.has_bug("NULL_SEG")):
                if maxx < int(raise_to):
                    self.note(0x80000000, 0, "a", f"max extended leaf raised to 0x{int(raise_to):x}: host max >= "
                              f"0x{int(L.get('ext_raise_min', 0x8000001D)):x} and (kernel has LFENCE_RDTSC or lacks "
                              "bug NULL_SEG)")
                maxx = max(maxx, int(raise_to))
            for leaf in range(0x80000000, maxx + 1):
                self.extended(leaf, maxx if leaf == 0x80000000 else None)
        vendor = self.raw.vendor
        if vendor in ("CentaurHauls", "  Shanghai  "):
            hc = self.host(0xC0000000)
            maxc = min(hc[0], 0xC0000004)
            for leaf in range(0xC0000000, maxc + 1):
                v = self.host(leaf)
                if leaf == 0xC0000000:
                    v[0] = maxc
                elif leaf == 0xC0000001:
                    self.override(leaf, 0, v)
                else:
                    v = [0, 0, 0, 0]
                self.emit(leaf, 0, v)
        return self.out

    def basic(self, leaf: int, maxb: int | None) -> None:
        L = self.L
        v = self.host(leaf)
        if not self.has_case(leaf):
            v = self.zero(leaf, 0, f"leaf 0x{leaf:x}: no case in __do_cpuid_func, the default zeroes it")
        elif leaf == 0:
            assert maxb is not None
            v[0] = maxb
            self.note(0, 0, "a", f"max basic leaf limited to 0x{int(L.get('max_basic', 0x1F)):x}")
        elif leaf == 1:
            self.override(1, 0, v)
        elif leaf == 2:
            pass
        elif leaf == 4:
            self.emit(4, 0, v)
            i = 1
            while v[0] & 0x1F:
                v = self.host(4, i)
                self.emit(4, i, v)
                i += 1
            return
        elif leaf == 6:
            v = [0x4, 0, 0, 0]
            self.note(6, 0, "abcd", "leaf 6: only ARAT (EAX bit 2) is allowed")
        elif leaf == 7:
            maxsub = min(v[0], int(L.get("leaf7_max_subleaf", 1)))
            v[0] = maxsub
            self.override(7, 0, v)
            self.emit(7, 0, v)
            for sub in range(1, maxsub + 1):
                # subleaves 1..max: every register not overridden by a caps word is zeroed
                s2 = [0, 0, 0, 0]
                self.override(7, sub, s2)
                self.note(7, sub, "abcd", f"leaf 7.{sub}: registers without a KVM caps word are zeroed")
                self.emit(7, sub, s2)
            return
        elif leaf == 0xA:
            if not self.var("enable_pmu") or not self.k.has("ARCH_PERFMON"):
                v = self.zero(0xA, 0, "leaf 0xA zeroed: enable_pmu off or kernel lacks ARCH_PERFMON")
            else:
                v = self.pmu_leaf(v)
        elif leaf in (0xB, 0x1F):
            v = [0, 0, 0, v[3]]
            self.note(leaf, 0, "abc", "topology leaf: EAX/EBX/ECX zeroed, EDX (x2APIC id) from the host CPU")
        elif leaf == 0xD:
            self.xsave(v)
            return
        elif leaf == 0x12:
            if not self.cap("SGX"):
                v = self.zero(0x12, 0, "leaf 0x12 zeroed: KVM lacks SGX")
            else:
                self.override(0x12, 0, v)
                v[1] &= 1  # SGX_MISC_EXINFO
                self.emit(0x12, 0, v)
                s = self.host(0x12, 1)
                s[0] &= 0x000000F6 | 0x00000400  # SGX_ATTR_PRIV_MASK | UNPRIV_MASK (approximation)
                s[1] = 0
                self.emit(0x12, 1, s)
                return
        elif leaf in (0x14, 0x1D):
            feat = "INTEL_PT" if leaf == 0x14 else "AMX_TILE"
            if not self.cap(feat):
                v = self.zero(leaf, 0, f"leaf 0x{leaf:x} zeroed: KVM lacks {feat}")
            else:
                self.emit(leaf, 0, v)
                for i in range(1, v[0] + 1):
                    self.emit(leaf, i, self.host(leaf, i))
                return
        elif leaf == 0x1E:
            if not self.cap("AMX_TILE"):
                v = self.zero(0x1E, 0, "leaf 0x1E zeroed: KVM lacks AMX_TILE")
            elif L.get("leaf1e_max_subleaf") is not None:
                v[0] = min(v[0], int(L["leaf1e_max_subleaf"]))
                self.emit(0x1E, 0, v)
                if v[0] >= 1:
                    s = self.host(0x1E, 1)
                    s = [s[0], 0, 0, 0]
                    self.override(0x1E, 1, s)
                    self.emit(0x1E, 1, s)
                return
        elif leaf == 0x24 and "0x24" in L.get("cases", []):
            if not self.cap("AVX10"):
                v = self.zero(0x24, 0, "leaf 0x24 zeroed: KVM lacks AVX10")
            else:
                maxsub = L.get("leaf24_max_subleaf")
                ver = min(v[1] & 0xFF, int(L.get("avx10_version_max", 1)))
                v[0] = min(v[0], int(maxsub)) if maxsub is not None else 0
                self.override(0x24, 0, v)
                v[1] |= ver
                v[2] = v[3] = 0
                self.emit(0x24, 0, v)
                if maxsub is not None and v[0] >= 1:
                    s = [0, 0, self.host(0x24, 1)[2], 0]
                    self.override(0x24, 1, s)
                    self.emit(0x24, 1, s)
                return
        else:
            v = self.zero(leaf, 0, f"leaf 0x{leaf:x} has no rule in __do_cpuid_func: zeroed")
        self.emit(leaf, 0, v)

    def pmu_leaf(self, v: list[int]) -> list[int]:
        ver = min(v[0] & 0xFF, int(self.L.get("pmu_version_max", 2)))
        gp = min(v[0] >> 8 & 0xFF, int(self.L.get("pmu_max_gp", 8)))
        width = v[0] >> 16 & 0xFF
        masklen = v[0] >> 24 & 0xFF
        fixed = min(v[3] & 0x1F, int(self.L.get("pmu_max_fixed", 3)))
        fwidth = v[3] >> 5 & 0xFF
        self.note(0xA, 0, "abcd", "leaf 0xA from kvm_pmu_cap (approximation: host PMU clamped to KVM's limits)")
        return [ver | gp << 8 | width << 16 | masklen << 24, v[1], 0, fixed | fwidth << 5 | (1 << 15 if ver else 0)]

    def host_xcr0(self) -> tuple[int, str]:
        """The host kernel's XCR0: CPUID 0xD.0 & the kernel's user xfeatures, each needing its CPUID flag."""
        d0 = self.host(0xD, 0)
        x = d0[0] | d0[3] << 32
        x &= int(str(self.L.get("kernel_xfeatures", "0x" + "f" * 16)), 0)
        dropped = []
        for bit, feat in self.L.get("xfeature_needs", {}).items():
            b = int(bit)
            if x >> b & 1 and not self.k.has(feat):
                x &= ~(1 << b)
                dropped.append(f"{b} (kernel lacks {feat})")
        why = "fpu/xstate.c:fpu__init_system_xstate(): CPUID 0xD.0 & XFEATURE_MASK_USER_SUPPORTED"
        if dropped:
            why += "; dropped xfeature " + ", ".join(dropped)
        return x, why

    def xsave(self, v: list[int]) -> None:
        L = self.L
        host_xcr0, why = self.host_xcr0()
        mask = int(str(L.get("xcr0_mask", "0x602ff")), 0)
        supported = host_xcr0 & mask
        clear = L.get("xcr0_vendor_clear", {}).get(self.caps.vendor or "", None)
        extra = ""
        if clear and self.cond(clear.get("if")):
            supported &= ~int(clear["mask"], 0)
            extra = f"; vendor setup clears 0x{int(clear['mask'], 0):x} ({clear['src']})"
        permitted = supported
        # the calling process has no permission for dynamic features (AMX TILEDATA): kvm_get_filtered_xcr0()
        permitted &= ~(1 << 18)
        if L.get("xtile_filter") == "cfg_and_data":
            permitted &= ~(1 << 17)
        xss = 0
        xss_mask = int(str(L.get("xss_mask", "0x0")), 0)
        if xss_mask and self.k.has("XSAVES"):
            d1 = self.host(0xD, 1)
            xss = (d1[2] | d1[3] << 32) & xss_mask
            if self.var("host_xss_cet_all") is False:
                xss &= ~0x1800
            if not self.cap("XSAVES"):
                xss = 0
            if not self.cap("SHSTK") and not self.cap("IBT"):
                xss &= ~0x1800
        v0 = [v[0] & permitted & 0xFFFFFFFF, xstate_size(self.raw, permitted, False), 0, v[3] & (permitted >> 32)]
        v0[2] = v0[1]
        self.note(0xD, 0, "abcd", f"leaf 0xD.0: XCR0 = host XCR0 0x{host_xcr0:x} ({why}) & KVM_SUPPORTED_XCR0 "
                  f"0x{mask:x}{extra}, minus dynamic features without permission (kvm_get_filtered_xcr0) = "
                  f"0x{permitted:x}; sizes from the host's 0xD subleaves")
        self.emit(0xD, 0, v0)
        if not permitted:
            return
        s = self.host(0xD, 1)
        self.override(0xD, 1, s)
        if s[0] & ((1 << 1) | (1 << 3)):  # XSAVEC | XSAVES
            s[1] = xstate_size(self.raw, permitted | xss, True)
        else:
            s[1] = 0
        s[2] &= xss & 0xFFFFFFFF
        s[3] &= xss >> 32
        self.emit(0xD, 1, s)
        for i in range(2, 64):
            if permitted >> i & 1:
                s_state = False
            elif xss >> i & 1:
                s_state = True
            else:
                continue
            e = self.host(0xD, i)
            if not e[0] or (e[2] & 1) != s_state:
                continue
            if not self.cap("XFD"):
                e[2] &= ~(1 << 2)
            e[3] = 0
            self.emit(0xD, i, e)

    def extended(self, leaf: int, maxx: int | None) -> None:
        L = self.L
        cases = L.get("cases", [])
        v = self.host(leaf)
        if not self.has_case(leaf):
            v = self.zero(leaf, 0, f"leaf 0x{leaf:x}: no case in __do_cpuid_func, the default zeroes it")
        elif leaf == 0x80000000:
            assert maxx is not None
            v[0] = maxx
            self.note(leaf, 0, "a", f"max extended leaf limited to 0x{int(L.get('max_extended')):x}")
        elif leaf == 0x80000001:
            v[1] &= ~genmask(27, 16)
            self.override(leaf, 0, v)
        elif leaf == 0x80000005:
            pass
        elif leaf == 0x80000006:
            v[3] &= ~genmask(17, 16)
        elif leaf == 0x80000007:
            if L.get("ext7_edx") == "bit8":
                v = [0, 0, 0, v[3] & (1 << 8)]
                self.note(leaf, 0, "d", "EDX &= invariant TSC (bit 8) only")
            else:
                power = v[3]
                self.override(leaf, 0, v)
                v = [0, 0, 0, v[3] & power]
                self.note(leaf, 0, "d", "EDX = caps word & boot_cpu_data.x86_power (host EDX)")
        elif leaf == 0x80000008 and L.get("g_phys_as") == "legacy":
            virt_as = max(v[0] >> 8 & 0xFF, 48)
            tdp = self.var("tdp_enabled")
            g_phys = v[0] >> 16 & 0xFF
            if not g_phys or not tdp:
                g_phys = v[0] & 0xFF
            v[0] = g_phys | virt_as << 8
            v[2] &= ~(genmask(31, 16) | genmask(11, 8))
            v[3] = 0
            self.note(leaf, 0, "a", f"address sizes (before 5.18): EAX[7:0] = {g_phys} (host GuestPhysAddrSize when "
                      f"set and tdp_enabled={int(tdp)}, else MAXPHYADDR), virt max(host, 48) = {virt_as}")
            self.override(leaf, 0, v)
        elif leaf == 0x80000008:
            virt_as = max(v[0] >> 8 & 0xFF, 48)
            tdp = self.var("tdp_enabled")
            if not tdp:
                phys_as, g_phys = v[0] & 0xFF, 0
            else:
                phys_as = v[0] & 0xFF
                g_phys = phys_as
                if not self.k.has("LA57"):
                    g_phys = min(g_phys, 48)
            if not L.get("g_phys_as"):
                g_phys = 0
            v[0] = phys_as | virt_as << 8 | g_phys << 16
            v[2] &= ~(genmask(31, 16) | genmask(11, 8))
            v[3] = 0
            self.note(leaf, 0, "a", f"address sizes: phys {phys_as}, virt max(host, 48) = {virt_as}, "
                      f"guest phys {g_phys} (tdp_enabled={int(tdp)})")
            self.override(leaf, 0, v)
        elif leaf == 0x8000000A:
            if not self.cap("SVM"):
                v = self.zero(leaf, 0, "leaf 0x8000000A zeroed: KVM lacks SVM (kvm_amd nested=0 or not AMD)")
            else:
                v = [1, 8, 0, 0]
                self.override(leaf, 0, v)
                self.note(leaf, 0, "ab", "SVM revision 1, 8 ASIDs")
        elif leaf == 0x80000019:
            v[2] = v[3] = 0
        elif leaf == 0x8000001A:
            v = [v[0] & 7, 0, 0, 0]
        elif leaf == 0x8000001D:
            self.emit(leaf, 0, v)
            i = 1
            while v[0] & 0x1F:
                v = self.host(leaf, i)
                self.emit(leaf, i, v)
                i += 1
            return
        elif leaf == 0x8000001E:
            v = self.zero(leaf, 0, "host topology not passed")
        elif leaf == 0x8000001F:
            if not self.cap("SEV"):
                v = self.zero(leaf, 0, "leaf 0x8000001F zeroed: KVM lacks SEV (kvm_amd sev=0 or unsupported)")
            else:
                self.override(leaf, 0, v)
                v[1] &= ~genmask(31, 12)
                v[1] &= ~genmask(11, 6)
        elif leaf == 0x80000020:
            v = self.zero(leaf, 0, "leaf 0x80000020 zeroed")
        elif leaf == 0x80000021:
            v[3] = 0
            if L.get("ext21_ebx") == "eraps" and self.cap("ERAPS"):
                v[1] &= genmask(23, 16)
            else:
                v[1] = 0
            if "CPUID_8000_0021_ECX" not in self.p.words:
                v[2] = 0
            self.override(leaf, 0, v)
        elif leaf == 0x80000022 and "0x80000022" in cases:
            v[2] = v[3] = 0
            if not self.var("enable_pmu") or not self.cap("PERFMON_V2"):
                v = self.zero(leaf, 0, "leaf 0x80000022: enable_pmu off or KVM lacks PERFMON_V2")
            else:
                self.override(leaf, 0, v)
                v[1] = v[1] & 0xF
        else:
            v = self.zero(leaf, 0, f"leaf 0x{leaf:x} has no rule in __do_cpuid_func: zeroed")
        self.emit(leaf, 0, v)


def build_table(policy: Policy, raw: CpuidTable, caps: CapsResult, kcaps: KernelCaps,
                var: Callable[[str], bool], cond: Callable[[str | None], bool] | None = None) -> LeafResult:
    return LeafBuilder(policy, raw, caps, kcaps, var, cond).build()
