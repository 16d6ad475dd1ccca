"""How a case's guest boots: which probe form on which machine, and how to read its report.

The probe comes in two boot forms (rig.guest.probe_build): a PVH ELF for
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

from ..errors import RigError
from ..guest.probe_build import ProbeArtifacts
from ..guest.protocol import ProbeProtocolError, ProbeReport, parse_transcript
from ..qemu.launcher import ProbeVerdict

FORMS = ("pvh", "bootsector", "qboot")
#: the firmware image of the qboot form (qemu-system-data ships it next to SeaBIOS)
QBOOT = "qboot.rom"
RUNNABLE_GUESTS = ("probe", "linux", "ssh")


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


def split_machine(machine: str) -> tuple[str, str]:
    """``"q35+pvh"`` -> ("q35", "pvh"); ``"microvm"`` -> ("microvm", "pvh"); ``"pc"`` -> ("pc", "bootsector")."""
    base, _, forced = machine.partition("+")
    if forced:
        if forced not in FORMS:
            raise GuestError(f"machine {machine!r}: unknown probe form {forced!r} (expected one of: {', '.join(FORMS)})")
        return base, forced
    return base, ("pvh" if base.startswith("microvm") else "bootsector")


def probe_boot(machine: str, probe: ProbeArtifacts) -> Boot:
    base, form = split_machine(machine)
    if form == "pvh":
        return Boot(base, form, kernel=probe.pvh)
    if form == "qboot":
        if base.startswith("microvm"):
            raise GuestError(f"machine {machine!r}: microvm has its own minimal firmware; use plain microvm")
        return Boot(base, "pvh", kernel=probe.pvh, bios=QBOOT)
    if base.startswith("microvm"):
        raise GuestError(f"machine {machine!r}: microvm has no BIOS disk boot; use the pvh form")
    return Boot(base, form, drive=probe.bootsector)


def guest_kind(guest: str) -> tuple[str, str | None]:
    """``"linux@6.1"`` -> ("linux", "6.1"); ``"probe"`` -> ("probe", None)."""
    kind, sep, arg = guest.partition("@")
    return kind, (arg if sep else None)


def check_guest(guest: str, machine: str | None = None, host: str = "native") -> None:
    kind, arg = guest_kind(guest)
    if host.startswith("emulated:") and kind != "probe":
        raise GuestError(f"guest {guest!r} on host {host!r}: emulated hosts run the probe as their L2 guests only",
                         hint="use guests = [\"probe\"] for emulated hosts")
    if kind not in RUNNABLE_GUESTS:
        raise GuestError(f"guest {guest!r} cannot be run by `rig run` yet (runnable: {', '.join(RUNNABLE_GUESTS)})",
                         hint="use guests = [\"probe\"], [\"linux\"] or [\"ssh\"] in the matrix")
    if arg is not None and kind != "linux":
        raise GuestError(f"guest {guest!r}: only the linux guest takes an argument (linux@KERNEL, e.g. linux@6.1)")
    guest = kind
    if guest == "linux" and machine is not None:
        from .linux_case import check_linux_machine

        check_linux_machine(machine)
    if guest == "ssh" and machine is not None:
        from .ssh_case import check_ssh_machine

        check_ssh_machine(machine)


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
