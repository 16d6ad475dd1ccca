"""KVM feature-policy model: what KVM_GET_SUPPORTED_CPUID returns, per kernel version.

Public API (used by other layers and by the emulated-host oracle; keep stable)::

    policy = load_policy("6.12")                 # nearest not-newer policy file ("7.3.4+deb13-cloud-amd64" works)
    choice = resolve_policy("6.14")              # PolicyChoice(policy, entry, requested, exact, approximation)
    pred = predict_supported(profile, policy, {"kvm_amd.nested": "0"})
    pred.table                                   # CpuidTable: predicted KVM_GET_SUPPORTED_CPUID
    pred.trace(0x80000021, 0, "ecx", 1)          # list[TraceStep], layer by layer, with kernel source locations
    compare_supported(pred.table, measured, policy)  # list[Difference], named by feature and word
    assume_kernel_caps(profile, policy)          # KernelInfo marked assumed

    from rig.policy import check                 # module: check.check(profile, policy) -> CheckResult
    from rig.policy.store import select          # (entry, why) for a kernel version

Policies are data (rig/policy/data): ``linux-VER.json`` imported from Debian's
sources by ``rig policy import`` (:mod:`.importer`; linux-source packages, or the
source package ``linux`` for 6.17/6.18 (:mod:`.source`), or any git revision
(:mod:`.gitsource`)), the shared hand-written ``linux.overlay.json``
(hardware-setup rules of module parameters, meanings of C conditions the
importer cannot translate), and hand-written variants: stand-ins for series with
no source (``linux-6.16.json``, ``linux-6.19-tsa-fixed.json``: approximate) and
what-ifs selected by name (``linux-7.3-tsa-prefix.json``).  User imports live in
``<cache>/policies`` (:func:`.store.user_dir`, ``rig policy get``).
:func:`resolve_policy` says whether a choice is exact (:class:`PolicyChoice`).
"""

from __future__ import annotations

from .evaluate import TraceStep
from .kernelcaps import KernelCaps, assume_kernel_caps
from .model import Policy, PolicyError
from .predict import Difference, Prediction, compare_supported, predict_supported
from .store import PolicyChoice, load_policy, resolve_policy, select
from .store import entries as list_policies

__all__ = [
    "Policy", "PolicyError", "Prediction", "Difference", "TraceStep", "KernelCaps",
    "load_policy", "select", "resolve_policy", "PolicyChoice", "list_policies", "predict_supported", "compare_supported", "assume_kernel_caps",
]
