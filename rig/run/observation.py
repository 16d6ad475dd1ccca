"""What running a case showed, typed: :class:`CaseObservation` (every runner returns one).

The views a runner brings: *configured* (QMP ``feature-words``, ``filtered-features`` and
the model expansion), *observed* (mode -> the guest's CPUID table, only when the outcome is
``ok``), the probe's runtime experiments, an OS guest's own report (:class:`OsObservation`),
an emulated host's measured ``KVM_GET_SUPPORTED_CPUID``, and findings only the runner can
make (the ssh guest's instruction checks).  :func:`rig.run.assemble.assemble` turns one,
with the case's prediction, into the case's result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cpuid.table import CpuidTable
from ..qemu.launcher import Observation
from ..results import Finding, Outcome


@dataclass
class OsObservation:
    """What an OS guest (linux, ssh) reported (None fields: it did not report)."""

    release: str
    user: CpuidTable | None
    runtime: Mapping[str, Iterable[Any]] | None = None
    cpuinfo_flags: list[str] | None = None
    cpuinfo_bugs: list[str] | None = None
    vulnerabilities: dict[str, str] | None = None


@dataclass
class CaseObservation:
    outcome: Outcome
    message: str
    #: the QEMU that ran the case ("7.2.19"); None when none was found
    qemu_version: str | None = None
    configured: CpuidTable | None = None
    filtered: CpuidTable | None = None
    expansion: dict | None = None
    observed: dict[str, CpuidTable] = field(default_factory=dict)
    runtime: Mapping[str, Iterable[Any]] | None = None
    os: OsObservation | None = None
    #: an emulated host's KVM_GET_SUPPORTED_CPUID as L1 measured it
    kvm_measured: CpuidTable | None = None
    #: whether a guest that reads other than QEMU configured may be a host quirk (native KVM hosts)
    quirks_possible: bool = False
    extra_findings: list[Finding] = field(default_factory=list)
    exit_code: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: further entries of the case's views.json (boot form, image, ...)
    views: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)
        if self.outcome != Outcome.OK:
            self.observed = {}
            self.runtime = None


def from_launch(obs: Observation, version: str, **fields) -> CaseObservation:
    """The launcher's QMP views and outcome as a :class:`CaseObservation` (``fields``: the rest)."""
    return CaseObservation(obs.outcome, obs.message, version, configured=obs.feature_words,
                           filtered=obs.filtered_features, expansion=obs.expansion, exit_code=obs.exit_code,
                           timings_ms=obs.timings_ms, **fields)
