"""The model's inputs per host kind: QEMU facts, KVM's supported table, the host's raw CPUID.

A case's typed host (:class:`rig.caseaxes.HostSpec`) picks one of these:

* :class:`NativeInputs` -- this machine: its QEMU binaries' facts, ``/dev/kvm``'s
  ``KVM_GET_SUPPORTED_CPUID`` and its raw CPUID (read once per run, on first use);
* :class:`SimulatedInputs` -- a saved host profile: KVM's supported table predicted by the
  KVM policy model (rig.policy) for the profile's (or the requested) kernel, the profile's
  raw CPUID;
* :class:`MeasuredInputs` -- an emulated host once L1 is up (rig.run.emulated): the
  supported table L1's KVM measured, L1's raw CPUID, and the policy model's prediction of
  that table (compared with the measured one: view ``kvm``).  The L2 QEMU is the system
  build.

Every value is computed once per run and kept on the object (no module-level caches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..caseaxes import EmulatedHostSpec, HostSpec, NativeHost, SimulatedHost
from ..cpuid.table import CpuidTable
from ..errors import RigError
from ..qemu.binaries import BinaryFacts, QemuBinary, find_qemu, gather_facts
from ..results import Case


class HostInputError(RigError):
    pass


@dataclass(frozen=True)
class KvmInputs:
    """What ``-accel kvm`` predictions need from the host."""

    supported: CpuidTable
    raw: CpuidTable | None
    #: the KVM policy model's prediction of ``supported`` (emulated hosts, where ``supported`` is measured)
    predicted_supported: CpuidTable | None = None
    note: str = ""
    #: approximate inputs of the KVM side (a kernel with no exact KVM policy), one sentence each
    approximations: tuple[str, ...] = ()


class QemuFacts:
    """QEMU binaries and their facts, per matrix ``qemu`` entry, gathered once."""

    def __init__(self) -> None:
        self._binaries: dict[str, QemuBinary] = {}
        self._facts: dict[str, BinaryFacts] = {}

    def binary(self, spec: str) -> QemuBinary:
        if spec not in self._binaries:
            self._binaries[spec] = find_qemu(spec)
        return self._binaries[spec]

    def facts(self, spec: str) -> BinaryFacts:
        if spec not in self._facts:
            self._facts[spec] = gather_facts(self.binary(spec))
        return self._facts[spec]


@dataclass
class NativeInputs:
    qemu: QemuFacts
    _kvm: list[KvmInputs] = field(default_factory=list)

    def facts(self, case: Case) -> BinaryFacts:
        return self.qemu.facts(case.qemu)

    def kvm(self) -> KvmInputs:
        if not self._kvm:
            from ..cpuid.enumeration import enumerate_cpuid
            from ..host.cpuid_exec import CpuidExecutor
            from ..host.kvm import read_kvm_cpuid

            supported = read_kvm_cpuid().supported
            try:
                raw = enumerate_cpuid(CpuidExecutor.open())
            except RigError:
                raw = None
            self._kvm.append(KvmInputs(supported, raw))
        return self._kvm[0]


@dataclass
class SimulatedInputs:
    spec: SimulatedHost
    qemu: QemuFacts
    _kvm: list[KvmInputs] = field(default_factory=list)

    def facts(self, case: Case) -> BinaryFacts:
        return self.qemu.facts(case.qemu)

    def kvm(self) -> KvmInputs:
        if not self._kvm:
            from ..host.profile import HostProfile
            from ..policy import predict_supported, resolve_policy

            if self.spec.profile is None:
                raise HostInputError("host 'simulate' with accel kvm needs a profile: simulate:PROFILE[@KERNEL]")
            profile = HostProfile.load(self.spec.profile)
            version = self.spec.kernel or profile.kernel.release
            if not version:
                raise HostInputError(f"{self.spec.profile}: the profile has no kernel release; give one as "
                                     f"simulate:{self.spec.profile}@6.12")
            choice = resolve_policy(version)
            self._kvm.append(KvmInputs(predict_supported(profile, choice.policy).table, profile.raw,
                                       approximations=policy_approximations(choice)))
        return self._kvm[0]


@dataclass
class MeasuredInputs:
    """An emulated host's inputs, from L1's profile (``profile``: rig.host.profile.HostProfile)."""

    spec: EmulatedHostSpec
    qemu: QemuFacts
    profile: Any
    _kvm: list[KvmInputs] = field(default_factory=list)

    def facts(self, case: Case) -> BinaryFacts:
        """The L2 QEMU's facts: L1 runs the system build."""
        return self.qemu.facts("system")

    def kvm(self) -> KvmInputs:
        if not self._kvm:
            supported = self.profile.kvm.supported
            if supported is None:
                raise HostInputError("no KVM_GET_SUPPORTED_CPUID measured in L1")
            predicted, note, approx = kvm_policy_prediction(self.profile)
            self._kvm.append(KvmInputs(supported, self.profile.raw, predicted, note, approx))
        return self._kvm[0]


def policy_approximations(choice: Any) -> tuple[str, ...]:
    """The sentence of a ``rig.policy.PolicyChoice`` that is not exact for its kernel (else nothing)."""
    return (f"KVM policy: {choice.approximation}",) if choice.approximation else ()


def kvm_policy_prediction(profile: Any) -> tuple[CpuidTable | None, str, tuple[str, ...]]:
    """The policy model's KVM_GET_SUPPORTED_CPUID for a host profile (None and why when it cannot), and the
    approximation sentences of the policy it used."""
    from ..policy import predict_supported, resolve_policy

    try:
        release = profile.kernel.release if profile.kernel else ""
        choice = resolve_policy(release)
        return predict_supported(profile, choice.policy).table, "", policy_approximations(choice)
    except RigError as e:
        return None, f"no KVM prediction: {e}", ()


HostInputs = NativeInputs | SimulatedInputs | MeasuredInputs


def inputs_for(spec: HostSpec, qemu: QemuFacts, cache: dict[str, Any]) -> NativeInputs | SimulatedInputs:
    """The inputs of a native or simulated host (one object per host in ``cache``); emulated hosts get
    theirs from their L1 (rig.run.emulated)."""
    key = str(spec)
    if key not in cache:
        if isinstance(spec, NativeHost):
            cache[key] = NativeInputs(qemu)
        elif isinstance(spec, SimulatedHost):
            cache[key] = SimulatedInputs(spec, qemu)
        else:
            raise HostInputError(f"host {spec}: its model inputs come from its L1 (rig.run.emulated)")
    return cache[key]
