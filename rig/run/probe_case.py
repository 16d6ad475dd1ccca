"""Observing a ``probe`` case on this machine: QEMU boots the probe, QMP says what QEMU configured.

One :func:`rig.qemu.launcher.launch` (QMP ``feature-words``/``filtered-features``/expansion,
then the guest runs; timeout, process-group cleanup; artifacts ``cmdline.txt``,
``serial.log``, ``qmp.jsonl``, ``stderr.log``) whose serial transcript
:class:`rig.run.guests.ProbeReader` parses into the observed tables.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ..qemu.cmdline import QemuCommand
from ..qemu.launcher import LaunchSpec, launch
from ..results import Case
from .guests import ProbeReader, probe_boot
from .observation import CaseObservation, from_launch

if TYPE_CHECKING:
    from .context import RunContext


async def observe_probe(ctx: RunContext, case: Case, workdir: Path, started: asyncio.Event) -> CaseObservation:
    binary = ctx.binary(case.qemu)
    boot = probe_boot(case.machine_spec, ctx.probe)
    cmd = QemuCommand(binary=str(binary.path), machine=boot.machine, accel=case.accel, cpu=case.cpu_arg,
                      kernel=boot.kernel, drive=boot.drive, memory=ctx.memory, firmware_dir=binary.firmware_dir,
                      bios=boot.bios)
    reader = ProbeReader(case.id, workdir / "serial.log")
    obs = await launch(LaunchSpec(cmd, case.id, workdir, timeout=case.timeout, probe_check=reader, started=started))
    report = reader.report
    return from_launch(obs, ".".join(map(str, binary.version)), observed=report.tables if report is not None else {},
                       runtime=report.runtime if report is not None else None, quirks_possible=case.accel == "kvm",
                       views={"form": boot.form, "image": str(boot.image), "bios": boot.bios})
