"""Boot the linux guest under QEMU, observe QMP, and parse what its init reported.

:func:`boot_linux` launches a :class:`rig.images.linux.LinuxImage`, given
``-cpu``, accelerator and machine, through :func:`rig.qemu.launcher.launch`
(QMP ``feature-words`` and friends, timeout, process-group cleanup,
artefacts in ``workdir``). It parses the serial transcript with
:func:`rig.guest.linux.parse_linux_transcript`. How each machine boots
(microvm through the kernel's PVH note, q35/pc through firmware) is in
``images/linux.toml`` ``[boot]``. QEMU failing, hanging or the guest
reporting garbage are outcomes on the returned :class:`LinuxRun`, not
exceptions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from ..images.linux import LinuxImage, LinuxRecipe, load_recipe
from ..qemu.cmdline import QemuCommand
from ..qemu.launcher import LaunchSpec, Observation, ProbeVerdict, launch
from .linux import LinuxProtocolError, LinuxReport, parse_linux_transcript


class LinuxBootError(RigError):
    pass


@dataclass
class LinuxRun:
    observation: Observation
    report: LinuxReport | None  # None unless the guest reported completely
    error: LinuxProtocolError | None = None

    @property
    def ok(self) -> bool:
        return self.observation.ok and self.report is not None

    @property
    def message(self) -> str:
        return self.observation.message


def machine_boot(machine: str, recipe: LinuxRecipe) -> dict[str, str]:
    """The ``[boot.machines.<machine>]`` entry (``machine``, ``kernel``, ``end``)."""
    machines = recipe.boot.get("machines", {})
    base = machine.split(",", 1)[0]
    if base not in machines:
        raise LinuxBootError(
            f"the linux guest cannot boot on machine {machine!r}",
            hint=f"use one of {', '.join(sorted(machines))}",
        )
    entry = dict(machines[base])
    if machine != base:
        entry["machine"] = machine  # the caller's own options win
    return entry


def linux_command(
    image: LinuxImage,
    *,
    cpu: str,
    accel: str | None = None,
    machine: str | None = None,
    memory: str | None = None,
    binary: str = "qemu-system-x86_64",
    firmware_dir: str | Path | None = None,
    append: str = "",
    recipe: LinuxRecipe | None = None,
) -> QemuCommand:
    """The QEMU command that boots ``image`` (serial and QMP are filled in by the launcher)."""
    recipe = recipe or load_recipe()
    boot = recipe.boot
    m = machine_boot(machine or str(boot["machine"]), recipe)
    kernel = image.vmlinux if m["kernel"] == "vmlinux" else image.vmlinuz
    cmdline = f"{boot['cmdline']} rig.end={m['end']}" + (f" {append}" if append else "")
    return QemuCommand(
        binary=binary,
        machine=m["machine"],
        accel=accel or str(boot["accel"]),
        cpu=cpu,
        kernel=kernel,
        initrd=image.initrd,
        append=cmdline,
        memory=memory or str(boot["memory"]),
        firmware_dir=firmware_dir,
        debug_exit=False,
    )


class _Reader:
    """The launcher's probe check: parse the transcript once, keep the report."""

    def __init__(self, case: str, path: Path) -> None:
        self.case, self.path = case, path
        self.report: LinuxReport | None = None
        self.error: LinuxProtocolError | None = None

    def __call__(self, serial_text: str, exit_code: int) -> ProbeVerdict:
        try:
            self.report = parse_linux_transcript(serial_text, case=self.case, transcript_path=self.path)
        except LinuxProtocolError as e:
            self.error = e
            return ProbeVerdict(False, f"linux guest: {e.problem}")
        if self.report.probe_rc not in (0, None):
            return ProbeVerdict(False, f"linux guest: probe-user exited with {self.report.probe_rc}")
        return ProbeVerdict(True, f"linux {self.report.release} reported")


async def boot_linux_async(
    image: LinuxImage,
    *,
    cpu: str,
    workdir: Path,
    accel: str | None = None,
    machine: str | None = None,
    timeout: float | None = None,
    case: str | None = None,
    qmp: bool = True,
    command: QemuCommand | None = None,
) -> LinuxRun:
    recipe = load_recipe()
    cmd = command or linux_command(image, cpu=cpu, accel=accel, machine=machine, recipe=recipe)
    name = case or f"linux-{cpu}"
    reader = _Reader(name, Path(workdir) / "serial.log")
    spec = LaunchSpec(
        command=cmd,
        name=name,
        workdir=Path(workdir),
        timeout=float(timeout if timeout is not None else recipe.boot.get("timeout", 60)),
        qmp_queries=qmp,
        start_paused=qmp,
        probe_check=reader,
    )
    obs = await launch(spec)
    if not obs.ok and reader.error is None and obs.serial_text:
        # the guest did not finish (timeout, crash): keep why its transcript is unusable
        try:
            parse_linux_transcript(obs.serial_text, case=name, transcript_path=obs.serial_path)
        except LinuxProtocolError as e:
            reader.error = e
    return LinuxRun(obs, reader.report if obs.ok else None, reader.error)


def boot_linux(image: LinuxImage, *, cpu: str, workdir: Path, **kw) -> LinuxRun:
    """:func:`boot_linux_async` in a fresh event loop."""
    return asyncio.run(boot_linux_async(image, cpu=cpu, workdir=workdir, **kw))
