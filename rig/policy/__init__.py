"""KVM feature-policy model: what KVM_GET_SUPPORTED_CPUID returns, per kernel version.

Public API (used by other layers and by the emulated-host oracle)::

    policy = load_policy("6.12")                 # nearest not-newer policy file
    pred = predict_supported(profile, policy, {"kvm_amd.nested": "0"})
    pred.table                                   # CpuidTable
    pred.trace(0x80000021, 0, "ecx", 1)          # list[TraceStep], layer by layer
    compare_supported(pred.table, measured, policy)  # list[Difference]
    assume_kernel_caps(profile, policy)          # KernelInfo marked assumed
"""

from __future__ import annotations

from .evaluate import TraceStep
from .kernelcaps import KernelCaps, assume_kernel_caps
from .model import Policy, PolicyError
from .predict import Difference, Prediction, compare_supported, predict_supported
from .store import entries as list_policies
from .store import load_policy, select

__all__ = [
    "Policy", "PolicyError", "Prediction", "Difference", "TraceStep", "KernelCaps",
    "load_policy", "select", "list_policies", "predict_supported", "compare_supported", "assume_kernel_caps",
]
