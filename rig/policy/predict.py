"""Predict ``KVM_GET_SUPPORTED_CPUID`` for a host profile under a policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..cpuid.table import REGISTERS, CpuidTable, Location, fmt_leaf
from ..host.profile import HostProfile
from .evaluate import CapsResult, TraceStep, evaluate_caps, vendor_of
from .kernelcaps import KernelCaps, kernel_caps, raw_bit
from .leaves import LeafResult, build_table
from .model import Policy


def profile_params(profile: HostProfile) -> dict[str, str]:
    out = {}
    for m in profile.kvm.modules:
        for k, v in m.params.items():
            out[f"{m.name}.{k}"] = str(v)
    return out


@dataclass
class Prediction:
    policy: Policy
    table: CpuidTable
    caps: CapsResult
    kernel: KernelCaps
    leaves: LeafResult
    raw: CpuidTable
    params: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def feature_at(self, leaf: int, subleaf: int, reg: str, bit: int) -> str | None:
        w = self.policy.word_at(leaf, subleaf, reg)
        if w is None:
            return None
        return self.policy.feature_at(w.name, bit)

    def trace(self, leaf: int, subleaf: int, reg: str, bit: int) -> list[TraceStep]:
        """The journey of one bit, layer by layer, each step with its source."""
        p = self.policy
        loc = Location(leaf, subleaf, reg, bit)
        steps: list[TraceStep] = []
        rb = raw_bit(self.raw, leaf, subleaf, reg, bit)
        steps.append(TraceStep("raw", f"host CPUID {loc} = {rb}", None, rb))
        w = p.word_at(leaf, subleaf, reg)
        name = p.feature_at(w.name, bit) if w else None
        if name:
            f = p.features[name]
            if f.kernel:
                has = self.kernel.has(name)
                why = self.kernel.why(name)
                if why is None and self.kernel.from_profile:
                    why = (f"/proc/cpuinfo flag {f.cpuinfo!r} {'present' if has else 'absent'}" if f.cpuinfo
                           else "hidden from /proc/cpuinfo")
                if why is None:
                    why = self.kernel.absent_reasons.get(name, "not derived")
                steps.append(TraceStep("kernel caps", f"kernel has X86_FEATURE_{name}: {int(has)} ({why})",
                                       "arch/x86/include/asm/cpufeatures.h", int(has)))
            else:
                steps.append(TraceStep("kernel caps", f"X86_FEATURE_{name} is KVM-only (no kernel capability)",
                                       "arch/x86/kvm/reverse_cpuid.h", None))
        if w is not None and self.leaves.overrides.get((leaf, subleaf, reg)) == w.name:
            steps.extend(self.caps.trace.get((w.name, bit), []))
            if not self.caps.trace.get((w.name, bit)):
                steps.append(TraceStep("macro", f"{w.name} bit {bit}: no rule of {p.label} names this bit, "
                                       "so KVM never sets it", f"arch/x86/kvm/cpuid.c (linux {p.version})", 0))
        for n in self.leaves.notes.get((leaf, subleaf, reg), []):
            if n.mask >> bit & 1:
                steps.append(TraceStep("leaf rule", n.text, f"arch/x86/kvm/cpuid.c:__do_cpuid_func (linux {p.version})"))
        final = self.table.bit(leaf, subleaf, reg, bit)
        if (leaf, subleaf) not in self.table:
            steps.append(TraceStep("supported", f"leaf {fmt_leaf(leaf, subleaf)} not returned by KVM -> 0", None, 0))
        else:
            steps.append(TraceStep("supported", f"KVM_GET_SUPPORTED_CPUID {loc} = {final}", None, final))
        return steps


def out_of_range_mode(profile: HostProfile) -> str:
    """How this host's CPUID answers leaves above the maximum: ``intel`` (Intel CPUs, QEMU TCG) or ``zero`` (AMD)."""
    emu = profile.notes.get("emulated") if isinstance(profile.notes, dict) else None
    if isinstance(emu, dict) and emu.get("outer_accel", "tcg") == "tcg":
        return "intel"
    return "intel" if profile.raw.vendor in ("GenuineIntel", "CentaurHauls", "  Shanghai  ") else "zero"


def predict_supported(profile: HostProfile, policy: Policy, params: Mapping[str, str] | None = None) -> Prediction:
    """Predicted KVM_GET_SUPPORTED_CPUID for ``profile`` under ``policy``.

    ``params`` (``{"kvm_amd.nested": "0"}``) override the profile's module
    parameters.
    """
    allp = profile_params(profile)
    allp.update(params or {})
    kc = kernel_caps(profile, policy)
    vendor = vendor_of(profile.raw, profile.kvm.vendor_module)
    oor = out_of_range_mode(profile)
    caps = evaluate_caps(policy, profile.raw, kc, allp, vendor, oor)

    from .evaluate import Evaluator

    ev = Evaluator(policy, profile.raw, kc, allp, vendor, oor)
    ev.caps = caps.caps
    ev.vars = dict(caps.variables)
    lr = build_table(policy, profile.raw, caps, kc, ev.variable, ev.cond)
    notes = list(caps.notes) + [n for n in ev.notes if n not in caps.notes]
    if profile.kvm.vendor_module is None and vendor is not None:
        notes.append(f"the profile records no kvm_amd/kvm_intel module: modelled as {vendor} from the CPU vendor "
                     "(a different vendor module, e.g. PVM, is not modelled)")
    if not kc.from_profile:
        notes.append("kernel caps are assumed from raw CPUID and rules (the profile has no /proc/cpuinfo flags)")
    return Prediction(policy, lr.table, caps, kc, lr, profile.raw, allp, notes)


#: host-specific fields that differ per CPU or per call, not policy: (leaf, subleaf|None, reg, mask)
VOLATILE: tuple[tuple[int, int | None, str, int], ...] = (
    (0x1, 0, "ebx", 0xFF000000),  # initial APIC id
    (0xB, None, "edx", 0xFFFFFFFF),  # x2APIC id
    (0x1F, None, "edx", 0xFFFFFFFF),
    (0x4, None, "eax", 0xFC000000),  # cores per package (APIC id space), varies with masking tools
)


@dataclass(frozen=True)
class Difference:
    location: Location
    predicted: int
    measured: int
    feature: str | None
    word: str | None

    def __str__(self) -> str:
        name = self.feature or "(unnamed bit)"
        w = f" word {self.word}" if self.word else ""
        return f"{name} {self.location}{w}: predicted {self.predicted}, measured {self.measured}"


def _volatile(leaf: int, subleaf: int, reg: str) -> int:
    m = 0
    for lf, sl, r, mask in VOLATILE:
        if lf == leaf and (sl is None or sl == subleaf) and r == reg:
            m |= mask
    return m


def compare_supported(predicted: CpuidTable, measured: CpuidTable, policy: Policy | None = None) -> list[Difference]:
    """Bit differences between a prediction and a measured KVM_GET_SUPPORTED_CPUID, named.

    Fields that are per-CPU (APIC ids) are ignored.  Leaves present on one
    side only are compared against zeros.
    """
    from ..cpuid.catalogue import CatalogueError, catalogue

    try:
        cat = catalogue()
    except (CatalogueError, OSError, ValueError):
        cat = None
    out = []
    for d in predicted.diff(measured):
        loc = d.location
        if _volatile(loc.leaf, loc.subleaf, loc.reg) >> loc.bit & 1:
            continue
        feature = word = None
        if policy is not None:
            w = policy.word_at(loc.leaf, loc.subleaf, loc.reg)
            if w is not None:
                word = w.name
                feature = policy.feature_at(w.name, loc.bit)
        if feature is None and cat is not None:
            f = cat.by_location(loc.leaf, loc.subleaf, loc.reg, loc.bit)
            feature = f.name if f else None
        out.append(Difference(loc, d.a, d.b, feature, word))
    return out


__all__ = ["Prediction", "Difference", "predict_supported", "compare_supported", "REGISTERS"]
