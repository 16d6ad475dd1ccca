"""The predicted view of a case, from the QEMU CPU-model layer model (rig.qemu.model*).

The model is another module's job; this adapter only asks it.  When the model
is not importable (or cannot predict a case, e.g. a model it does not know),
the prediction is ``None`` and the comparison has two views (configured and
observed); the result says why in ``prediction_note``.

`rig run` asks for a case's prediction while that case's QEMU starts up
(:attr:`rig.qemu.launcher.LaunchSpec.on_started`), before QEMU has answered
anything: ``expansion`` is then None.  The model must not need QEMU's answers
(a prediction made from them would be a copy of what it is compared with).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..cpuid.table import CpuidTable
from ..errors import RigError
from ..matrix.model import Case

#: fn(case, qemu_version, expansion) -> CpuidTable | None
PredictFn = Callable[[Case, str, dict | None], CpuidTable | None]


@dataclass
class Prediction:
    table: CpuidTable | None
    note: str = ""
    #: the predicted QMP ``filtered-features`` (None when the model does not say)
    filtered: CpuidTable | None = None
    #: sentences naming model inputs that are approximate (e.g. no exact KVM policy for the kernel)
    approximations: tuple[str, ...] = ()


#: fn(case, qemu_version, expansion) -> (configured table, filtered features or None)
ViewsFn = Callable[[Case, str, dict | None], tuple[CpuidTable | None, CpuidTable | None]]


def _table_only(fn: PredictFn) -> ViewsFn:
    """A model that predicts only the configured table: no filtered features."""
    return lambda case, version, expansion: (fn(case, version, expansion), None)


def _find_model() -> tuple[ViewsFn | None, str]:
    try:
        mod = importlib.import_module("rig.qemu.model")
    except ImportError as e:
        return None, f"QEMU model layer not available ({e})"
    views = getattr(mod, "predict_case_views", None)
    if views is not None:
        return views, ""
    fn = getattr(mod, "predict_case", None)
    if fn is None:
        return None, "rig.qemu.model has no predict_case()"
    return _table_only(fn), ""


def _approximations(case: Case) -> tuple[str, ...]:
    try:
        from ..qemu.casepredict import case_approximations
    except ImportError:
        return ()
    return case_approximations(case)


class Predictor:
    """One per run: resolves the model once."""

    def __init__(self, fn: PredictFn | None = None) -> None:
        if fn is None:
            self._fn, self._why = _find_model()
        else:
            self._fn, self._why = _table_only(fn), ""

    @property
    def available(self) -> bool:
        return self._fn is not None

    def __call__(self, case: Case, qemu_version: str, expansion: dict[str, Any] | None) -> Prediction:
        if self._fn is None:
            return Prediction(None, self._why)
        try:
            table, filtered = self._fn(case, qemu_version, expansion)
            return Prediction(table, filtered=filtered, approximations=_approximations(case))
        except RigError as e:
            return Prediction(None, f"no prediction: {e}")
