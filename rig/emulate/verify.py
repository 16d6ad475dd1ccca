"""Checks of an L2 run against the layers below it.

For a probe run with QMP (``run_probe(..., qmp=True)``):

* **guest vs qemu configured**: every register QEMU lists in ``feature-words``
  must read the same in the guest (per CPU mode the probe reports), except
  the bits the CPU computes at run time from guest state -- OSXSAVE
  (1.ECX[27], mirrors CR4.OSXSAVE) and OSPKE (7.0.ECX[4], mirrors CR4.PKE) --
  which the probe's runtime experiments check instead (Intel SDM vol. 2A,
  CPUID; AMD APM vol. 3, CPUID);
* **qemu configured within kvm supported**: a bit QEMU configured must be in
  L1's ``KVM_GET_SUPPORTED_CPUID`` unless QEMU sets it on its own (QEMU's
  ``kvm_arch_get_supported_cpuid`` fix-ups, :data:`QEMU_ADDED`) or it is one
  of the runtime bits above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cpuid.catalogue import CatalogueError, catalogue
from ..cpuid.table import CpuidTable, Location
from ..host.profile import HostProfile
from .l2 import L2Result

#: (leaf, subleaf, reg) -> mask of bits the CPU derives from guest state at run time
RUNTIME_BITS: dict[tuple[int, int, str], int] = {
    (0x1, 0, "ecx"): 1 << 27,  # OSXSAVE
    (0x7, 0, "ecx"): 1 << 4,  # OSPKE
}
#: bits QEMU adds to what KVM reports (target/i386/kvm/kvm.c kvm_arch_get_supported_cpuid)
QEMU_ADDED: dict[tuple[int, int, str], int] = {
    (0x1, 0, "ecx"): (1 << 31) | (1 << 24),  # HYPERVISOR always; TSC_DEADLINE_TIMER with in-kernel irqchip
    (0x80000001, 0, "ecx"): 1 << 22,  # TOPOEXT "unconditionally enabled ... runnable on older kernels"
    (0x40000001, 0, "eax"): 1 << 15,  # KVM_FEATURE_MSI_EXT_DEST_ID with a split irqchip (microvm's default)
    (0x40000001, 0, "edx"): 1 << 0,  # KVM_HINTS_REALTIME
}


def _name(loc: Location) -> str:
    try:
        return catalogue().name_of(loc.leaf, loc.subleaf, loc.reg, loc.bit)
    except (CatalogueError, OSError, ValueError):
        return "?"


@dataclass(frozen=True)
class BitMismatch:
    location: Location
    expected: int
    observed: int
    name: str
    where: str  # "prot32 vs configured", "configured vs supported"

    def __str__(self) -> str:
        return f"{self.name} {self.location} ({self.where}): expected {self.expected}, got {self.observed}"


@dataclass
class L2Check:
    words: int = 0
    bits: int = 0
    modes: list[str] = field(default_factory=list)
    guest_vs_configured: list[BitMismatch] = field(default_factory=list)
    configured_not_supported: list[BitMismatch] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.guest_vs_configured or self.configured_not_supported or self.problems)

    def summary(self) -> str:
        if self.problems:
            return "; ".join(self.problems)
        head = (f"guest = QEMU configured on {self.words} registers x {len(self.modes)} modes" if not self.guest_vs_configured
                else f"{len(self.guest_vs_configured)} guest bits differ from QEMU configured: "
                + ", ".join(str(m) for m in self.guest_vs_configured[:6]))
        tail = ("configured within KVM supported" if not self.configured_not_supported
                else f"{len(self.configured_not_supported)} configured bits not KVM-supported: "
                + ", ".join(m.name for m in self.configured_not_supported[:6]))
        return f"{head}; {tail}"


def _bits(value: int) -> list[int]:
    return [b for b in range(32) if value >> b & 1]


def l2_check(profile: HostProfile | None, result: L2Result, configured: CpuidTable | None = None) -> L2Check:
    """Compare a probe run's observed CPUID with QEMU's configured words (or ``configured``: what kvmrun set,
    see :func:`rig.emulate.l2.feature_registers`) and L1's KVM table."""
    out = L2Check()
    configured = configured if configured is not None else result.feature_words()
    if configured is None:
        out.problems.append("no QMP feature-words (run the case with qmp=True)")
        return out
    try:
        report = result.report()
    except Exception as e:  # ProbeProtocolError and friends carry the reason
        out.problems.append(f"probe transcript unusable: {e}")
        return out
    out.modes = sorted(report.tables)
    supported: CpuidTable | None = profile.kvm.supported if profile is not None else None
    for (leaf, sub), regs in configured.items():
        for reg in ("eax", "ebx", "ecx", "edx"):
            want = regs.get(reg)
            if want is None:
                continue
            out.words += 1
            skip = RUNTIME_BITS.get((leaf, sub, reg), 0)
            out.bits += 32 - bin(skip).count("1")
            for mode in out.modes:
                got = report.tables[mode].reg(leaf, sub, reg) or 0
                for b in _bits((got ^ want) & ~skip):
                    loc = Location(leaf, sub, reg, b)
                    out.guest_vs_configured.append(BitMismatch(loc, want >> b & 1, got >> b & 1, _name(loc),
                                                               f"{mode} vs configured"))
            if supported is not None:
                sup = supported.reg(leaf, sub, reg) or 0
                extra = want & ~sup & ~skip & ~QEMU_ADDED.get((leaf, sub, reg), 0)
                for b in _bits(extra):
                    loc = Location(leaf, sub, reg, b)
                    out.configured_not_supported.append(BitMismatch(loc, 0, 1, _name(loc), "configured vs supported"))
    return out
