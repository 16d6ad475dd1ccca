"""What every case of a run shares: the matrix, the run directory, the probe, QEMU binaries, guest images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..cpuid.table import CpuidTable
from ..images.probe import ProbeArtifacts
from ..matrix.model import Matrix
from ..qemu.binaries import QemuBinary
from .hosts import QemuFacts
from .predict import Predictor
from .rundir import RunDir


@dataclass
class RunContext:
    matrix: Matrix
    rundir: RunDir
    probe: ProbeArtifacts
    predictor: Predictor = field(default_factory=Predictor)
    #: QEMU binaries and their facts, per matrix ``qemu`` entry
    qemu: QemuFacts = field(default_factory=QemuFacts)
    #: the model's inputs of each native or simulated host (rig.run.hosts.inputs_for)
    host_inputs: dict[str, Any] = field(default_factory=dict)
    memory: str = "64M"
    #: guest images other than the probe, built once per run (rig.run.linux_case.prepare_linux_image)
    guest_images: dict[str, Any] = field(default_factory=dict)
    #: this machine's raw CPUID (for detecting hosts that do not intercept CPUID), read on first use
    _host_raw: list[CpuidTable | None] = field(default_factory=list)

    def host_raw(self) -> CpuidTable | None:
        if not self._host_raw:
            from ..cpuid.enumeration import enumerate_cpuid
            from ..host.cpuid_exec import CpuidExecutor, CpuidUnavailable

            try:
                self._host_raw.append(enumerate_cpuid(CpuidExecutor.open()))
            except CpuidUnavailable:
                self._host_raw.append(None)
        return self._host_raw[0]

    def binary(self, spec: str) -> QemuBinary:
        return self.qemu.binary(spec)
