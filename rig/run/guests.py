"""How a case's guest boots: which probe form on which machine, and how to read its report.

The probe comes in two boot forms (rig.images.probe): a PVH ELF for
``-kernel`` and a SeaBIOS boot sector.  ``microvm`` has no BIOS disk boot, so
it takes the PVH form (protected and long mode); ``pc``/``q35`` boot the boot
sector, which also reports real mode.  A machine can be forced to a form with a
suffix: ``q35+pvh`` boots the PVH form on q35 (SeaBIOS loads it through its
linuxboot option ROM), ``q35+qboot`` boots the PVH form with QEMU's minimal
qboot firmware (``-bios qboot.rom``) instead of SeaBIOS: the same guest CPUID,
about half the boot time of SeaBIOS under TCG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..caseaxes import (
    BootForm,
    CaseSpecError,
    GuestKind,
    MachineSpec,
    parse_machine,
)
from ..errors import RigError
from ..guest.protocol import ProbeProtocolError, ProbeReport, parse_transcript
from ..images.probe import ProbeArtifacts
from ..qemu.launcher import ProbeVerdict

FORMS = tuple(f.value for f in BootForm)
#: the firmware image of the qboot form (qemu-system-data ships it next to SeaBIOS)
QBOOT = "qboot.rom"
RUNNABLE_GUESTS = tuple(k.value for k in GuestKind)


class GuestError(RigError):
    pass


@dataclass(frozen=True)
class Boot:
    machine: str          # the -machine value (suffix removed)
    form: str             # "pvh" | "bootsector" (the probe's own form; qboot boots the pvh form)
    kernel: Path | None = None
    drive: Path | None = None
    bios: str | None = None  # -bios (None: the machine's default firmware)

    @property
    def image(self) -> Path:
        p = self.kernel or self.drive
        assert p is not None
        return p


def _machine(machine: str | MachineSpec) -> MachineSpec:
    if isinstance(machine, MachineSpec):
        return machine
    try:
        return parse_machine(machine)
    except CaseSpecError as e:
        raise GuestError(str(e)) from None


def split_machine(machine: str | MachineSpec) -> tuple[str, str]:
    """``"q35+pvh"`` -> ("q35", "pvh"); ``"microvm"`` -> ("microvm", "pvh"); ``"pc"`` -> ("pc", "bootsector")."""
    m = _machine(machine)
    return m.base, m.form.value


def probe_boot(machine: str | MachineSpec, probe: ProbeArtifacts) -> Boot:
    m = _machine(machine)
    if m.form == BootForm.PVH:
        return Boot(m.base, "pvh", kernel=probe.pvh)
    if m.form == BootForm.QBOOT:
        if m.is_microvm:
            raise GuestError(f"machine {m}: microvm has its own minimal firmware; use plain microvm")
        return Boot(m.base, "pvh", kernel=probe.pvh, bios=QBOOT)
    if m.is_microvm:
        raise GuestError(f"machine {m}: microvm has no BIOS disk boot; use the pvh form")
    return Boot(m.base, m.form.value, drive=probe.bootsector)


class ProbeReader:
    """The launcher's probe check: parses the serial log, keeps the report (or the protocol error)."""

    def __init__(self, case_id: str, serial_path: Path | None = None) -> None:
        self.case_id = case_id
        self.serial_path = serial_path
        self.report: ProbeReport | None = None
        self.error: ProbeProtocolError | None = None

    def __call__(self, serial_text: str, exit_code: int) -> ProbeVerdict:
        try:
            self.report = parse_transcript(serial_text, case=self.case_id, transcript_path=self.serial_path)
        except ProbeProtocolError as e:
            self.error = e
            why = (" after a guest reset (QEMU exits 0 on reset with -no-reboot: a triple fault?)" if exit_code == 0
                   else f" (QEMU exit status {exit_code})")
            return ProbeVerdict(False, f"probe transcript unusable: {e.problem}{why}")
        if not self.report.ok:
            return ProbeVerdict(False, f"probe reported {self.report.status}")
        return ProbeVerdict(True, "probe reported")
