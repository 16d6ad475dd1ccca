"""Checks before any QEMU starts: can this rig run a case's guest on its host and machine?"""

from __future__ import annotations

from ..caseaxes import (
    CaseSpecError,
    EmulatedHostSpec,
    GuestKind,
    GuestSpec,
    HostSpec,
    MachineSpec,
    parse_guest,
    parse_host,
    parse_machine,
)
from ..results import Case
from .guests import GuestError
from .linux_case import check_linux_machine
from .ssh_case import check_ssh_machine


def check_guest(guest: str, machine: str | None = None, host: str = "native") -> None:
    """:func:`check_case_guest` for a matrix's strings."""
    try:
        g, h = parse_guest(guest), parse_host(host)
        m = parse_machine(machine) if machine is not None else None
    except CaseSpecError as e:
        raise GuestError(e.args[0], hint=e.hint) from None
    _check(g, h, m)


def check_case_guest(case: Case) -> None:
    """Fail early (before any QEMU starts) for a guest this host or machine cannot run."""
    _check(case.guest_spec, case.host_spec, case.machine_spec)


def _check(g: GuestSpec, host: HostSpec, machine: MachineSpec | None) -> None:
    if isinstance(host, EmulatedHostSpec) and g.kind != GuestKind.PROBE:
        raise GuestError(f"guest {str(g)!r} on host {str(host)!r}: emulated hosts run the probe as their L2 "
                         "guests only", hint="use guests = [\"probe\"] for emulated hosts")
    if machine is None:
        return
    if g.kind == GuestKind.LINUX:
        check_linux_machine(str(machine))
    elif g.kind == GuestKind.SSH:
        check_ssh_machine(str(machine))
