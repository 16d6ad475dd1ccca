"""One ``rig run`` case with the ``ssh`` guest: a full Debian system boots, the rig logs in and observes.

The rig's own image (``rig images build ssh``: debootstrap of Debian with sshd,
a key made at build time and the recorded host key) is built once per run
before any case (:func:`prepare_ssh_image`).  A case:

1. asks QEMU over QMP what it configures for the case's ``-cpu``/``-M``/``-accel``
   with a query-only launch of the same binary (:func:`rig.qemu.launcher.launch`,
   ``query_only``: QEMU starts paused, answers ``feature-words``/expansion,
   quits; its ``cmdline-qmp.txt`` and ``qmp.jsonl`` are kept).  The ssh boot
   has no QMP socket of its own (:meth:`rig.guest.ssh.SshGuest.qemu_argv`), and
   the CPU model's configuration does not depend on the disk or network
   devices;
2. boots the guest and logs in with paramiko (:meth:`rig.guest.ssh.SshGuest.run_case`,
   synchronous, in a thread; ``cmdline.txt``, ``serial.log``, ``stderr.log``),
   runs the user-mode probe, reads ``/proc/cpuinfo``, the vulnerabilities and
   the instruction checks (``insncheck``);
3. compares like the linux guest (:func:`rig.run.assemble.assemble`).
   An instruction that is advertised (and enabled by the guest kernel) but
   faults is a finding of view ``insn`` (classified like a guest-view
   difference: ``qemu-behaviour`` under TCG, ``kvm-behaviour`` under KVM);
   "hidden but works" results (TCG executes many instructions whatever
   ``-cpu`` says) are kept in ``views.json`` only.

Outcomes: QEMU refusing the configuration is the query launch's outcome
(``qemu-error``, no boot); no login before the case timeout is ``timeout``;
QEMU exiting before the login is ``qemu-aborted``; a failing guest command or
probe report is ``probe-failed``; a refused key or host key is ``rig-error``.
Cancelling the run (Ctrl-C) stops the case's QEMU at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compare.known import case_fields, match_finding
from ..cpuid.table import Location
from ..errors import RigError
from ..guest import ssh as sshmod
from ..guest.ssh import SshGuest, SshObservation
from ..matrix.model import KnownIssue
from ..qemu.cmdline import QemuCommand
from ..qemu.launcher import LaunchSpec, launch
from ..results import Case, Finding, IssueRef, Outcome
from .observation import CaseObservation, OsObservation, from_launch

if TYPE_CHECKING:
    from ..images.ssh import SshImage
    from .context import RunContext

GUEST = "ssh"

#: SshGuestError subclass -> case outcome (anything else of the ssh guest: probe-failed)
ERROR_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (sshmod.SshBootTimeout, "timeout"),
    (sshmod.SshQemuExited, "qemu-aborted"),
    (sshmod.SshHostKeyError, "rig-error"),
    (sshmod.SshAuthError, "rig-error"),
    (sshmod.SshConfigError, "rig-error"),
)


class SshGuestUnavailable(RigError):
    pass


def check_ssh_machine(machine: str) -> None:
    if machine.split(",", 1)[0] not in sshmod.PC_MACHINES:
        raise sshmod.SshConfigError(f"machine {machine!r}: the ssh guest boots from a disk through firmware",
                                    hint="use machines = [\"q35\"] or [\"pc\"] for ssh cases")


def outcome_of(error: Exception) -> str:
    for cls, outcome in ERROR_OUTCOMES:
        if isinstance(error, cls):
            return outcome
    return "probe-failed"


def prepare_ssh_image(ctx: RunContext, say: Callable[[str], None] | None = None) -> SshImage:
    """The run's ssh guest image, built (or found in the cache) once; a clear error when it cannot be built."""
    from ..images import cache
    from ..images.ssh import SshImageRecipe, build_default_ssh_image

    img = ctx.guest_images.get(GUEST)
    if img is not None:
        return img
    try:
        rootfs_cached = cache.is_complete(cache.entry_dir("ssh-rootfs", SshImageRecipe.load().rootfs_key()))
    except RigError as e:
        raise SshGuestUnavailable(f"the ssh guest image recipe is unusable: {e}") from None
    if not rootfs_cached and (os.geteuid() != 0 or shutil.which("debootstrap") is None):
        raise SshGuestUnavailable("the ssh guest image is not built, and building it needs root and debootstrap",
                                  hint="build it once as root: rig images build ssh")
    if say is not None:
        say("rig run: preparing the ssh guest image" + ("" if rootfs_cached else
            " (first time: debootstrap of a Debian system, about 2 minutes)"))
    try:
        img = build_default_ssh_image(log=say or (lambda _msg: None))
    except RigError as e:
        raise SshGuestUnavailable(f"the ssh guest image cannot be built: {e}",
                                  hint="build it once (root, network): rig images build ssh") from None
    if say is not None:
        say(f"rig run: ssh guest image {img.dir}")
    ctx.guest_images[GUEST] = img
    return img


class _TrackedGuest(SshGuest):
    """An :class:`SshGuest` that remembers its QEMU, so a cancelled run can stop it from the event loop."""

    def __init__(self, image: Any) -> None:
        super().__init__(image)
        self.qemu: sshmod.QemuProcess | None = None
        self.cancelled = False

    def _start_qemu(self, command: QemuCommand, workdir: Path):
        if self.cancelled:
            raise sshmod.SshQemuExited("the run was cancelled before QEMU started")
        qemu, port = super()._start_qemu(command, workdir)
        self.qemu = qemu
        if self.cancelled:
            qemu.stop(grace=0.5)
            raise sshmod.SshQemuExited("the run was cancelled while QEMU started")
        return qemu, port


def insn_findings(obs: SshObservation, case: Case, qemu_version: str, known: Iterable[KnownIssue] = ()) -> list[Finding]:
    """Advertised-but-faults instruction checks as findings (view ``insn``), matched against known issues."""
    from ..guest.instructions import load_instruction_data

    data = load_instruction_data()
    layer = "qemu-behaviour" if case.accel == "tcg" else "kvm-behaviour"
    fields = case_fields(case, qemu_version)
    out = []
    for r in obs.insncheck.advertised_but_faults:
        fb = data.features.get(r.feature)
        loc = Location(fb.leaf, fb.subleaf, fb.reg, fb.bit) if fb else Location(0, 0, "eax", 0)
        issue = match_finding(known, fields, name=r.feature, location=str(loc), layer=layer, modes=("user",))
        out.append(Finding(loc, r.feature, "known-bug" if issue else layer, layer, "insn", None, 1, {"user": 1},
                           IssueRef.of(issue) if issue else None,
                           note=f"instruction check {r.test}: {r.outcome} {r.signal}".rstrip() + f" ({r.explanation})"))
    return out


async def observe_ssh(ctx: RunContext, case: Case, workdir: Path, started: asyncio.Event) -> CaseObservation:
    img = ctx.guest_images.get(GUEST)
    if img is None:  # a caller that did not prepare the run (e.g. one case under pytest)
        img = await asyncio.to_thread(prepare_ssh_image, ctx)
    binary = ctx.binary(case.qemu)
    version = ".".join(map(str, binary.version))
    cmd = QemuCommand(binary=str(binary.path), machine=case.machine, accel=case.accel, cpu=case.cpu_arg,
                      firmware_dir=binary.firmware_dir)
    qdir = workdir / "qmp-query"
    started.set()  # a boot takes seconds: the prediction need not wait for QEMU's start
    qmp = await launch(LaunchSpec(cmd, case.id, qdir, timeout=min(case.timeout, 30.0), query_only=True))
    for name, dest in (("qmp.jsonl", "qmp.jsonl"), ("cmdline.txt", "cmdline-qmp.txt"), ("stderr.log", "stderr-qmp.log")):
        if (qdir / name).exists():
            (qdir / name).replace(workdir / dest)
    shutil.rmtree(qdir, ignore_errors=True)
    views: dict[str, Any] = {"form": "ssh", "image": str(img.dir)}
    nothing = OsObservation("", None)
    if not qmp.ok:
        out = from_launch(qmp, version, os=nothing, quirks_possible=case.accel == "kvm", views=views)
        out.message = f"QMP query launch: {qmp.message}"
        return out
    guest = _TrackedGuest(img)
    task = asyncio.ensure_future(asyncio.to_thread(guest.run_case, cmd, workdir=workdir, boot_timeout=case.timeout))
    try:
        obs: SshObservation = await asyncio.shield(task)
    except asyncio.CancelledError:
        guest.cancelled = True
        if guest.qemu is not None:
            guest.qemu.stop(grace=0.5)
        await asyncio.gather(task, return_exceptions=True)
        raise
    except sshmod.SshGuestError as e:
        out = from_launch(qmp, version, os=nothing, quirks_possible=case.accel == "kvm", views=views)
        out.outcome, out.message = Outcome(outcome_of(e)), str(e)
        return out
    user = obs.probe.tables.get("user")
    views["ssh"] = {"boot_to_login_s": round(obs.boot_to_login_s, 2), "timings_s": obs.to_json()["timings_s"],
                    "kernel_messages": list(obs.kernel_messages), "insncheck": obs.insncheck.to_json()}
    guest_obs = OsObservation(obs.kernel_release, user, obs.probe.runtime, list(obs.cpuinfo_flags),
                              list(obs.cpuinfo_bugs), dict(obs.vulnerabilities))
    message = f"ssh login after {obs.boot_to_login_s:.1f} s; kernel {obs.kernel_release}"
    hidden = [r.feature for r in obs.insncheck.hidden_but_works]
    if hidden:
        message += "; runs although hidden: " + " ".join(hidden)
    out = from_launch(qmp, version, os=guest_obs, quirks_possible=case.accel == "kvm", views=views,
                      extra_findings=insn_findings(obs, case, version, ctx.matrix.known_issues))
    out.outcome, out.message = Outcome.OK, message
    return out
