"""L2 guests inside an emulated host: command lines and results.

The L2 QEMU is the machine's QEMU copied into L1 (rig/images/l1.py); it runs
under L1's real KVM.  guests/l1/init adds ``-no-user-config -display none -L
/usr/share/qemu -serial file:SERIAL`` (the first serial port, COM1, is what
the rig returns as the transcript) and, for a QMP case, ``-qmp ... -S``.
Everything else comes from the caller; :func:`probe_args` gives the usual
probe command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..cpuid.parse import parse_feature_words
from ..cpuid.table import CpuidTable
from ..images.l1 import L1_PROBE

#: isa-debug-exit as the probe uses it (guests/probe/probe.h): QEMU exits with
#: (value << 1) | 1, 0x10 on success -> 33, 0x11 on failure -> 35
DEBUG_EXIT_DEVICE = "isa-debug-exit,iobase=0xf4,iosize=0x04"
EXIT_PROBE_OK = 33
EXIT_PROBE_FAIL = 35
#: exit status of a command killed by SIGKILL (busybox timeout -s KILL)
EXIT_KILLED = 137


def probe_args(cpu: str, machine: str = "microvm", *, memory: str = "32M", accel: str = "kvm",
               extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """QEMU arguments that boot the rig's PVH probe in L1 with ``-cpu cpu``."""
    return ["-M", machine, "-accel", accel, "-cpu", cpu, "-m", memory, "-nodefaults", "-no-reboot",
            "-kernel", L1_PROBE, "-device", DEBUG_EXIT_DEVICE, *extra]


@dataclass
class L2Result:
    """What one L2 QEMU run inside L1 produced."""

    case_id: int
    args: list[str]
    #: QEMU's exit status inside L1 (33: probe ok, 35: probe failed, 137: killed at the timeout)
    exit_status: int
    timeout: float
    serial: str
    stderr: str
    #: seconds measured inside L1 (centisecond resolution) and on the rig's clock
    l1_seconds: float
    wall_seconds: float
    #: QMP replies (only for qmp=True): "query-cpus-fast", "feature-words", "filtered-features"
    qmp: dict[str, Any] = field(default_factory=dict)
    qmp_errors: list[str] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return self.exit_status == EXIT_KILLED

    @property
    def probe_ok(self) -> bool:
        return self.exit_status == EXIT_PROBE_OK

    def _qmp_return(self, key: str) -> Any:
        reply = self.qmp.get(key)
        if not isinstance(reply, dict) or "return" not in reply:
            return None
        return reply["return"]

    def feature_words(self) -> CpuidTable | None:
        """QEMU's configured CPUID (QMP qom-get feature-words of CPU 0), if queried."""
        words = self._qmp_return("feature-words")
        return parse_feature_words(words, "L2 feature-words") if words is not None else None

    def filtered_features(self) -> CpuidTable | None:
        """Bits QEMU wanted but the accelerator (L1's KVM) could not give (qom-get filtered-features)."""
        words = self._qmp_return("filtered-features")
        return parse_feature_words(words, "L2 filtered-features") if words is not None else None

    def report(self, case: str | None = None):
        """The probe transcript parsed (rig.guest.protocol); raises ProbeProtocolError if it is not complete."""
        from ..guest.protocol import parse_transcript

        return parse_transcript(self.serial, case=case or f"L2 case {self.case_id} ({' '.join(self.args)})")


def parse_qmp_section(lines: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """kvmcap's ``case/N/qmp`` lines (``NAME JSON`` or ``error TEXT``) -> (replies, errors)."""
    replies: dict[str, Any] = {}
    errors: list[str] = []
    for line in lines:
        key, _, rest = line.partition(" ")
        if key == "error":
            errors.append(rest)
            continue
        try:
            replies[key] = json.loads(rest)
        except json.JSONDecodeError as e:
            errors.append(f"{key}: reply is not JSON ({e.msg})")
    return replies, errors


def feature_registers(table: CpuidTable | None) -> CpuidTable | None:
    """``table`` restricted to the registers that hold named features (the catalogue's words): the scope of
    a kvmrun case, as QEMU's feature-words are for a QEMU case (sizes, topology, brand are not predicted)."""
    if table is None:
        return None
    from ..cpuid.catalogue import catalogue

    out = CpuidTable()
    for leaf, sub, reg in catalogue().words():
        v = table.reg(leaf, sub, reg)
        if v is not None:
            out.set_reg(leaf, sub, reg, v)
    return out
