"""Agreement of the model with libvirt's cputestdata (``-enabled``/``-disabled`` bits).

libvirt recorded, for real CPUs, which named bits QEMU+KVM *enabled* for
``-cpu host`` and which raw bits it left *disabled*.  That is the qemu
configured layer, not KVM_GET_SUPPORTED_CPUID, and the kernel version is not
recorded, so only bits in KVM's capability words (the registers
``cpuid_entry_override()`` fills) are comparable, and QEMU's own additions
(bits QEMU sets or clears whatever KVM says) are excluded:

* 1.ECX[31] HYPERVISOR, 1.ECX[21] X2APIC, 1.ECX[24] TSC_DEADLINE: QEMU sets them for KVM guests (and KVM
  emulates them) -- kernels before 6.14 do not list HYPERVISOR/TSC_DEADLINE in KVM_GET_SUPPORTED_CPUID;
* 7.0.EDX[29] ARCH_CAPABILITIES (QEMU filters it by the MSR feature list on some versions);
* 0x8000000A.* (SVM features follow the kvm_amd ``nested`` parameter, not recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cpuid.table import CpuidTable, Location
from ..host.profile import HostProfile
from .model import Policy
from .predict import predict_supported

#: (leaf, subleaf, reg, bit) QEMU decides on its own
QEMU_OWN = {(1, 0, "ecx", 31), (1, 0, "ecx", 21), (1, 0, "ecx", 24), (7, 0, "edx", 29)}
#: features whose guest bit QEMU (not KVM) decides for `-cpu host`, with the reason (QEMU target/i386/cpu.c, kvm.c)
QEMU_OWN_FEATURES = {
    "CONSTANT_TSC": "invtsc is not migratable: QEMU enables it only on request",
    "TOPOEXT": "QEMU clears topoext when the vCPU topology cannot be expressed in 0x8000001E",
    "VMX": "nested VMX follows kvm_intel nested (not recorded)",
    "SVM": "nested SVM follows kvm_amd nested (not recorded)",
    "PDCM": "QEMU clears pdcm without a vPMU",
    "SGX": "needs an SGX EPC section on the QEMU command line",
    "SGX_LC": "needs an SGX EPC section on the QEMU command line",
    "PERFCTR_CORE": "QEMU clears perfctr-core without a vPMU",
    "WAITPKG": "QEMU enables waitpkg only with -overcommit cpu-pm=on",
}
SKIP_LEAVES = {0x8000000A}


@dataclass
class Agreement:
    name: str
    policy: str
    comparable: int = 0
    agree: int = 0
    #: libvirt enabled it but the model says KVM does not support it
    enabled_not_predicted: list[str] = field(default_factory=list)
    #: libvirt left it disabled but the model says KVM supports it
    disabled_but_predicted: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.agree / self.comparable if self.comparable else 1.0


def _bits(t: CpuidTable) -> set[tuple[int, int, str, int]]:
    out = set()
    for (leaf, sub), regs in t.items():
        for reg in ("eax", "ebx", "ecx", "edx"):
            v = regs.get(reg) or 0
            for b in range(32):
                if v >> b & 1:
                    out.add((leaf, sub, reg, b))
    return out


def agreement(profile: HostProfile, policy: Policy) -> Agreement | None:
    """None when the profile carries no libvirt enabled/disabled data."""
    en = profile.notes.get("qemu_kvm_host_enabled")
    dis = profile.notes.get("qemu_kvm_host_disabled")
    if en is None or dis is None:
        return None
    enabled = _bits(CpuidTable.from_json(en, "enabled"))
    disabled = _bits(CpuidTable.from_json(dis, "disabled"))
    pred = predict_supported(profile, policy)
    words = {(w.leaf, w.subleaf, w.reg) for w in policy.words.values()
             if w.name in policy.leaves.get("override_words", []) and w.leaf is not None}
    res = Agreement(profile.name or "?", policy.label)
    for pos in sorted(enabled | disabled):
        leaf, sub, reg, bit = pos
        if (leaf, sub, reg) not in words or pos in QEMU_OWN or leaf in SKIP_LEAVES:
            continue
        if (leaf, sub) not in profile.raw:  # the dump lacks the leaf: nothing to compare
            continue
        if pred.feature_at(leaf, sub, reg, bit) in QEMU_OWN_FEATURES:
            continue
        res.comparable += 1
        predicted = bool(pred.table.bit(leaf, sub, reg, bit))
        name = pred.feature_at(leaf, sub, reg, bit) or str(Location(leaf, sub, reg, bit))
        if (pos in enabled) == predicted:
            res.agree += 1
        elif pos in enabled:
            res.enabled_not_predicted.append(name)
        else:
            res.disabled_but_predicted.append(name)
    return res
