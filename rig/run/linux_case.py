"""One ``rig run`` case with the ``linux`` guest: a Debian kernel boots, its user-mode probe reads CPUID.

The image (:func:`rig.images.linux.build_linux_image`, the recipe's default
kernel) is built once per run before any case starts
(:func:`prepare_linux_image`) and kept on the run context.  A case boots it
through :func:`rig.guest.linux_run.boot_linux_async` (the same launcher as the
probe: QMP ``feature-words``/expansion, timeout, process-group cleanup,
artifacts ``cmdline.txt``, ``serial.log``, ``qmp.jsonl``, ``stderr.log``);
:func:`rig.run.assemble.assemble` compares and writes ``views.json``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..caseaxes import GuestKind, parse_guest
from ..errors import RigError
from ..guest.linux_run import LinuxBootError, boot_linux_async, linux_command, machine_boot
from ..images.linux import LinuxImage, build_linux_image, load_recipe
from ..results import Case
from .observation import CaseObservation, OsObservation, from_launch

if TYPE_CHECKING:
    from .context import RunContext

GUEST = "linux"


class LinuxGuestUnavailable(RigError):
    pass


def check_linux_machine(machine: str) -> None:
    """Fail early for a machine the linux guest cannot boot on (``rig.images`` recipe ``[boot.machines]``)."""
    if "+" in machine:
        raise LinuxBootError(f"machine {machine!r}: the linux guest has no probe boot forms",
                             hint="use microvm, q35 or pc without a +form suffix")
    machine_boot(machine, load_recipe())


def say_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def linux_kernel(guest: str) -> str | None:
    """The kernel request of a ``linux@KERNEL`` guest (None: the recipe's default kernel)."""
    return parse_guest(guest).kernel


def prepare_linux_image(ctx: RunContext, kernel: str | None = None,
                        say: Callable[[str], None] | None = None) -> LinuxImage:
    """The run's linux guest image for ``kernel``, built (or found in the cache) once; a clear error when it
    cannot be built."""
    key = GUEST if kernel is None else f"{GUEST}@{kernel}"
    img = ctx.guest_images.get(key)
    if img is not None:
        return img
    if say is not None:
        say(f"rig run: preparing the linux guest image ({'the default kernel' if kernel is None else 'kernel ' + kernel}"
            " + busybox + probe; the first time it downloads the kernel packages)")
    try:
        img = build_linux_image(kernel)
    except RigError as e:
        cmd = "rig images build linux" + (f" --kernel {kernel}" if kernel else "")
        raise LinuxGuestUnavailable(f"the linux guest image cannot be built: {e}",
                                    hint=f"build it once with network access: {cmd}") from None
    if say is not None:
        say(f"rig run: linux guest {img.release} ({img.directory})")
    ctx.guest_images[key] = img
    return img


def prepare_linux_images(ctx: RunContext, cases: Iterable[Case], say: Callable[[str], None] | None = say_stderr) -> None:
    """Every linux image the cases need, before the first case starts."""
    kernels = {c.guest_spec.kernel for c in cases if c.guest_spec.kind == GuestKind.LINUX}
    for kernel in sorted(kernels, key=lambda k: k or ""):
        prepare_linux_image(ctx, kernel, say)


async def observe_linux(ctx: RunContext, case: Case, workdir: Path, started: asyncio.Event) -> CaseObservation:
    kernel = case.guest_spec.kernel
    img = ctx.guest_images.get(GUEST if kernel is None else f"{GUEST}@{kernel}")
    if img is None:  # a caller that did not prepare the run (e.g. one case under pytest)
        img = await asyncio.to_thread(prepare_linux_image, ctx, kernel)
    binary = ctx.binary(case.qemu)
    cmd = linux_command(img, cpu=case.cpu_arg, accel=case.accel, machine=case.machine, binary=str(binary.path),
                        firmware_dir=binary.firmware_dir)
    started.set()  # a boot takes seconds: the prediction need not wait for QEMU's start
    run = await boot_linux_async(img, cpu=case.cpu_arg, workdir=workdir, timeout=case.timeout, case=case.id,
                                 command=cmd)
    obs = run.observation
    message = obs.message
    if obs.outcome != "ok" and run.error is not None:
        message = f"{message}; {run.error.problem}" if message else run.error.problem
    if obs.outcome == "timeout" and case.accel == "kvm" and not obs.serial_text.strip():
        message += ("; the kernel printed nothing: Linux guests hang on KVM hosts that do not intercept CPUID "
                    "(e.g. PVM); a probe case with the same -cpu shows whether this host is one")
    rep = run.report
    guest = OsObservation(img.release, None) if rep is None else OsObservation(
        rep.release, rep.table, rep.probe.runtime, rep.flags, rep.bugs, rep.vulnerabilities)
    result = from_launch(obs, ".".join(map(str, binary.version)), os=guest,
                         quirks_possible=case.accel == "kvm", views={"form": "linux", "image": str(img.directory)})
    result.message = message
    return result
