"""The predicted view of a case: the QEMU CPU-model layer model (rig.qemu.model) on the host's inputs.

The one adapter between a run and the model: :class:`Predictor` takes a case and its
host's inputs (:mod:`rig.run.hosts`: QEMU facts, and for ``-accel kvm`` KVM's supported
table and the host's raw CPUID) and asks :func:`rig.qemu.model.predict_guest`.  A case
the model cannot predict (e.g. a CPU model it does not know) gets no table and a note
saying why; the comparison then has two views (configured and observed).

The model never sees QEMU's answers for the case (a prediction made from them would be a
copy of what it is compared with), so ``rig run`` predicts while the case's QEMU starts
up (rig.run.execute.run_case).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..cpuid.table import CpuidTable
from ..emulate.host import KVMRUN_MACHINE
from ..emulate.l2 import feature_registers
from ..errors import RigError
from ..qemu.model import predict_guest
from ..results import Case
from .hosts import HostInputs, KvmInputs

#: a replacement model for tests: fn(case, qemu_version, expansion) -> CpuidTable | None
PredictFn = Callable[[Case, str, dict | None], CpuidTable | None]


@dataclass(frozen=True)
class Prediction:
    table: CpuidTable | None
    note: str = ""
    #: the predicted QMP ``filtered-features`` (None when the model does not say)
    filtered: CpuidTable | None = None
    #: approximate inputs the prediction rests on, one sentence each (what was used, how to get the exact one)
    approximations: tuple[str, ...] = ()
    #: the KVM policy model's supported table (emulated hosts: compared with L1's measured one, view "kvm")
    kvm_supported: CpuidTable | None = None


class Predictor:
    """One per run (``fn``: a replacement model, for tests)."""

    def __init__(self, fn: PredictFn | None = None) -> None:
        self._fn = fn

    def __call__(self, case: Case, inputs: HostInputs) -> Prediction:
        kvm: KvmInputs | None = None
        try:
            if case.accel == "kvm":
                kvm = inputs.kvm()
            if self._fn is not None:
                return Prediction(self._fn(case, "", None))
            if case.machine_spec.base == KVMRUN_MACHINE:  # no QEMU: the guest reads KVM's supported table as it is
                if kvm is None or kvm.predicted_supported is None:
                    raise RigError(f"kvmrun needs the KVM policy model's prediction ({kvm.note if kvm else 'no KVM'})")
                return Prediction(feature_registers(kvm.predicted_supported), approximations=kvm.approximations,
                                  kvm_supported=kvm.predicted_supported)
            p = predict_guest(inputs.facts(case), case.cpu_arg, case.accel, case.machine_spec.base,
                              kvm.supported if kvm else None, host_raw=kvm.raw if kvm else None)
            return Prediction(p.with_levels(), filtered=p.filtered, note=kvm.note if kvm else "",
                              approximations=(*p.approximations, *(kvm.approximations if kvm else ())),
                              kvm_supported=kvm.predicted_supported if kvm else None)
        except RigError as e:
            return Prediction(None, f"no prediction: {e}",
                              approximations=(*_qemu_approximations(case, inputs), *(kvm.approximations if kvm else ())),
                              kvm_supported=kvm.predicted_supported if kvm else None)


def _qemu_approximations(case: Case, inputs: HostInputs) -> tuple[str, ...]:
    """What a prediction of ``case`` would rest on that is not its own input (another QEMU series' facts),
    also when the model could not predict it (e.g. a feature the nearest series lacks)."""
    from ..qemu.facts import version_data

    try:
        return tuple(version_data(inputs.facts(case).version).approximations())
    except RigError:
        return ()
