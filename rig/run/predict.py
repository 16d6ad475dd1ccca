"""The predicted view of a case, from the QEMU CPU-model layer model (:mod:`rig.qemu.casepredict`).

When the model cannot predict a case (e.g. a model it does not know) the
prediction is ``None`` and the comparison has two views (configured and
observed); the result says why in ``prediction_note``.  A prediction that rests
on an input that is not the case's own (another QEMU series' facts, a machine
type without data) carries one sentence per such input in ``approximations``;
the case's verdict is then ``approximate`` where it would have been ``pass``.

`rig run` asks for a case's prediction while that case's QEMU starts up
(:attr:`rig.qemu.launcher.LaunchSpec.on_started`), before QEMU has answered
anything: ``expansion`` is then None.  The model must not need QEMU's answers
(a prediction made from them would be a copy of what it is compared with).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..cpuid.table import CpuidTable
from ..errors import RigError
from ..matrix.model import Case
from ..qemu.casepredict import case_approximations, kvm_approximations, predict_case_full

#: fn(case, qemu_version, expansion) -> CpuidTable | None
PredictFn = Callable[[Case, str, dict | None], CpuidTable | None]


@dataclass
class Prediction:
    table: CpuidTable | None
    note: str = ""
    #: the predicted QMP ``filtered-features`` (None when the model does not say)
    filtered: CpuidTable | None = None
    #: what the prediction rests on that is not the case's own input, and how to get the exact one
    approximations: tuple[str, ...] = ()


class Predictor:
    """One per run.  ``fn``: a table-only model (tests); default: the QEMU layer model."""

    def __init__(self, fn: PredictFn | None = None) -> None:
        self._fn = fn

    @property
    def available(self) -> bool:
        return True

    def __call__(self, case: Case, qemu_version: str, expansion: dict[str, Any] | None) -> Prediction:
        try:
            if self._fn is not None:
                return Prediction(self._fn(case, qemu_version, expansion))
            p = predict_case_full(case)
            return Prediction(p.with_levels(), filtered=p.filtered,
                              approximations=(*p.approximations, *kvm_approximations(case)))
        except RigError as e:
            return Prediction(None, f"no prediction: {e}", approximations=tuple(case_approximations(case)))
