"""Predictions for matrix cases: where the model's inputs come from, per host kind.

:func:`predict_case` (re-exported as ``rig.qemu.model.predict_case``; the run
driver calls it per case) resolves, once per process:

* the QEMU binary's facts (``rig.qemu.binaries.gather_facts``, cached on disk
  and in memory);
* for ``accel="kvm"`` the KVM supported table: ``native`` reads this machine's
  ``/dev/kvm`` (``KVM_GET_SUPPORTED_CPUID``) and raw CPUID;
  ``simulate:PROFILE[@KERNEL]`` predicts it from a saved host profile with the
  KVM policy model (``rig.policy.predict_supported``) for KERNEL (default: the
  profile's kernel release); ``emulated:`` hosts are predicted by the
  emulated-host runner, which passes L1's measured table to
  :func:`rig.qemu.model.predict_guest` itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..cpuid.table import CpuidTable
from ..errors import RigError
from .binaries import BinaryFacts, QemuBinary, find_qemu, gather_facts
from .model import QemuPrediction, predict_guest


class CasePredictionError(RigError):
    pass


@lru_cache(maxsize=16)
def _facts_for(spec: str) -> tuple[QemuBinary, BinaryFacts]:
    binary = find_qemu(spec)
    return binary, gather_facts(binary)


def warm_facts(specs: Any) -> None:
    """Gather (or load from the cache) the facts of each QEMU binary spec before a run's event
    loop starts, so the first case does not wait for a fresh binary's ``-S`` run. A spec that
    names no binary is left for the case to report."""
    for spec in sorted(set(specs)):
        try:
            _facts_for(spec)
        except RigError:
            continue


@lru_cache(maxsize=1)
def _native_kvm() -> tuple[CpuidTable, CpuidTable | None]:
    from ..host.kvm import read_kvm_cpuid

    supported = read_kvm_cpuid().supported
    raw = None
    try:
        from ..cpuid.enumeration import enumerate_cpuid
        from ..host.cpuid_exec import CpuidExecutor

        raw = enumerate_cpuid(CpuidExecutor.open())
    except RigError:
        raw = None
    return supported, raw


@lru_cache(maxsize=8)
def _simulated_choice(spec: str) -> tuple[Any, Any]:
    """(host profile, rig.policy.PolicyChoice) of a ``simulate:PROFILE[@KERNEL]`` host."""
    from ..host.profile import HostProfile
    from ..policy import resolve_policy

    rest = spec.split(":", 1)[1] if ":" in spec else ""
    if not rest:
        raise CasePredictionError("host 'simulate' with accel kvm needs a profile: simulate:PROFILE[@KERNEL]")
    path, _, kernel = rest.partition("@")
    profile = HostProfile.load(path)
    version = kernel or profile.kernel.release
    if not version:
        raise CasePredictionError(f"{path}: the profile has no kernel release; give one as simulate:{path}@6.12")
    return profile, resolve_policy(version)


@lru_cache(maxsize=8)
def _simulated_kvm(spec: str) -> tuple[CpuidTable, CpuidTable]:
    from ..policy import predict_supported

    profile, choice = _simulated_choice(spec)
    return predict_supported(profile, choice.policy).table, profile.raw


def case_approximations(case: Any) -> tuple[str, ...]:
    """Sentences saying which model inputs of ``case`` are approximate (the run marks such cases)."""
    if case.accel != "kvm" or not case.host.startswith("simulate"):
        return ()
    _profile, choice = _simulated_choice(case.host)
    return (f"KVM policy: {choice.approximation}",) if choice.approximation else ()


def kvm_inputs(host: str) -> tuple[CpuidTable, CpuidTable | None]:
    """(KVM supported table, host raw CPUID) for a case's host."""
    if host == "native":
        return _native_kvm()
    if host.startswith("simulate"):
        return _simulated_kvm(host)
    raise CasePredictionError(f"host {host!r}: KVM predictions for emulated hosts come from the emulated-host runner "
                              "(it passes L1's measured KVM_GET_SUPPORTED_CPUID to rig.qemu.model.predict_guest)")


def predict_case_full(case: Any) -> QemuPrediction:
    """The whole prediction (table, filtered, levels, notes) for a ``rig.matrix.model.Case``."""
    _binary, facts = _facts_for(case.qemu)
    supported = host_raw = None
    if case.accel == "kvm":
        supported, host_raw = kvm_inputs(case.host)
    # "q35+pvh", "pc+qboot": the suffix picks the rig's boot form, QEMU only sees the machine before it
    machine = case.machine.partition("+")[0]
    return predict_guest(facts, case.cpu_arg, case.accel, machine, supported, host_raw=host_raw)


def predict_case(case: Any, qemu_version: str | None = None, expansion: dict | None = None) -> CpuidTable:
    """The predicted view for a case (the run driver's hook): QEMU's configured feature words
    plus the level/vendor registers (:meth:`QemuPrediction.with_levels`); the comparison applies
    the guest rules (:func:`rig.qemu.model.guest_visible`) before comparing with the guest.

    ``qemu_version`` and ``expansion`` are accepted for the driver's signature;
    the model uses the binary's own facts (the per-case expansion would make
    the prediction a copy of QEMU's answer).
    """
    del qemu_version, expansion
    return predict_case_full(case).with_levels()


def predict_case_views(case: Any, qemu_version: str | None = None,
                       expansion: dict | None = None) -> tuple[CpuidTable, CpuidTable]:
    """:func:`predict_case` and the predicted QMP ``filtered-features`` (features the model or the
    line asked for that the accelerator or a dependency removes), from one prediction."""
    del qemu_version, expansion
    p = predict_case_full(case)
    return p.with_levels(), p.filtered
