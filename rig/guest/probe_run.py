"""Boot the bare-metal probe once and parse its report: the probe's side of a case, on its own.

:func:`run_probe` boots the PVH form (``-kernel``; microvm, q35, pc) or the
boot-sector form (``-drive``; SeaBIOS on q35, pc) through
:func:`rig.qemu.launcher.launch`. The launcher handles QMP ``feature-words``,
``filtered-features`` and the expansion, the timeout and the cleanup. The
serial transcript is parsed with :func:`rig.guest.protocol.parse_transcript`.
``rig run`` composes the same pieces for its matrices (rig/run/guests.py);
this module serves the tests, the benchmark and one-off use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from ..images.probe import ProbeArtifacts
from ..qemu.cmdline import QemuCommand
from ..qemu.launcher import LaunchSpec, Observation, ProbeVerdict, launch
from .protocol import EXIT_FAIL, EXIT_OK, ProbeProtocolError, ProbeReport, parse_transcript

FORMS = ("pvh", "bootsector")


class ProbeRunError(RigError):
    pass


@dataclass
class ProbeRun:
    observation: Observation
    report: ProbeReport | None  # parsed whenever the transcript is well formed (also for a failed probe)
    error: ProbeProtocolError | None = None

    @property
    def ok(self) -> bool:
        return self.observation.ok and self.report is not None and self.report.ok


def probe_command(
    probe: ProbeArtifacts,
    *,
    cpu: str,
    machine: str = "microvm",
    accel: str = "tcg",
    form: str = "pvh",
    memory: str = "64M",
    binary: str = "qemu-system-x86_64",
    firmware_dir: str | Path | None = None,
    append: str | None = None,
) -> QemuCommand:
    if form not in FORMS:
        raise ProbeRunError(f"unknown probe form {form!r}", hint=f"use one of {', '.join(FORMS)}")
    if form == "bootsector":
        if machine.startswith("microvm"):
            raise ProbeRunError("microvm has no BIOS disk boot", hint="use the pvh form on microvm")
        if append:
            raise ProbeRunError("the boot-sector form takes no command line", hint="use the pvh form")
        return QemuCommand(binary=binary, machine=machine, accel=accel, cpu=cpu, drive=probe.bootsector,
                           memory=memory, firmware_dir=firmware_dir)
    return QemuCommand(binary=binary, machine=machine, accel=accel, cpu=cpu, kernel=probe.pvh, append=append,
                       memory=memory, firmware_dir=firmware_dir)


class _Reader:
    def __init__(self, case: str, path: Path) -> None:
        self.case, self.path = case, path
        self.report: ProbeReport | None = None
        self.error: ProbeProtocolError | None = None

    def __call__(self, serial_text: str, exit_code: int) -> ProbeVerdict:
        try:
            self.report = parse_transcript(serial_text, case=self.case, transcript_path=self.path)
        except ProbeProtocolError as e:
            self.error = e
            return ProbeVerdict(False, e.problem)
        if exit_code == EXIT_FAIL or not self.report.ok:
            return ProbeVerdict(False, f"probe reported failure: DONE status={self.report.status} (exit {exit_code})")
        if exit_code != EXIT_OK:
            return ProbeVerdict(False, f"probe reported but QEMU exited with {exit_code}, not {EXIT_OK}")
        return ProbeVerdict(True, f"probe reported {', '.join(self.report.modes)}")


async def run_probe_async(
    probe: ProbeArtifacts,
    *,
    cpu: str,
    workdir: Path,
    machine: str = "microvm",
    accel: str = "tcg",
    form: str = "pvh",
    timeout: float = 30.0,
    append: str | None = None,
    qmp: bool = True,
    case: str | None = None,
    command: QemuCommand | None = None,
) -> ProbeRun:
    cmd = command or probe_command(probe, cpu=cpu, machine=machine, accel=accel, form=form, append=append)
    name = case or f"probe-{form}-{machine}-{accel}-{cpu}"
    reader = _Reader(name, Path(workdir) / "serial.log")
    obs = await launch(LaunchSpec(command=cmd, name=name, workdir=Path(workdir), timeout=timeout,
                                  qmp_queries=qmp, start_paused=qmp, probe_check=reader))
    if reader.report is None and reader.error is None and obs.serial_text:
        try:
            reader.report = parse_transcript(obs.serial_text, case=name, transcript_path=obs.serial_path)
        except ProbeProtocolError as e:
            reader.error = e
    return ProbeRun(obs, reader.report, reader.error)


def run_probe(probe: ProbeArtifacts, *, cpu: str, workdir: Path, **kw) -> ProbeRun:
    """:func:`run_probe_async` in a fresh event loop."""
    return asyncio.run(run_probe_async(probe, cpu=cpu, workdir=workdir, **kw))
