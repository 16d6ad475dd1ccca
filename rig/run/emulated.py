"""Cases on an emulated host (``emulated:MODEL@KERNEL[,param=value...]``): real KVM of a Debian kernel in L1.

All cases of one host share one L1 boot: an :class:`EmulatedSession` boots it
(rig.emulate.EmulatedHost, synchronous) in a thread of its own, which also starts
every L2 QEMU and powers L1 off, so the parent-death signal of L1's QEMU follows
a thread that outlives it.  Its cases run through :func:`rig.run.execute.run_case`
like any other: the session supplies the model's inputs (:class:`rig.run.hosts.MeasuredInputs`:
L1's measured ``KVM_GET_SUPPORTED_CPUID`` and raw CPUID, and the KVM policy model's
prediction of that table, compared with it as view ``kvm``) and the runner
(:meth:`EmulatedSession.observe`: one L2 probe in L1, configured = L2 QEMU's QMP
feature-words, observed = the probe).  An L1 that fails to boot makes every case of
the host a ``rig-error`` result naming why (the run goes on); cancelling the run
powers L1 off at once and records nothing for the case in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..caseaxes import BootForm, EmulatedHostSpec
from ..emulate.host import KVMRUN_MACHINE
from ..emulate.l2 import feature_registers
from ..errors import RigError
from ..qemu.launcher import classify
from ..results import Case, CaseResult, Outcome, judge
from .guests import ProbeReader
from .hosts import MeasuredInputs, QemuFacts
from .observation import CaseObservation
from .rundir import write_json

if TYPE_CHECKING:
    from .context import RunContext

EXIT_KILLED = 137  # busybox timeout -s KILL inside L1


def _exit_code(status: int) -> int:
    """A shell's 128+N for a signal-killed QEMU -> -N (as subprocess reports it)."""
    return -(status - 128) if 128 < status < 160 and status != EXIT_KILLED else status


class EmulatedSession:
    """One booted L1 for the cases of one emulated host (``async with``)."""

    def __init__(self, spec: EmulatedHostSpec, workdir: Path, qemu: QemuFacts) -> None:
        self.spec = spec
        self.workdir = workdir
        self.qemu = qemu
        self.host: Any = None
        self.inputs: MeasuredInputs | None = None
        # one thread: L1's QEMU dies with the thread that started it (PR_SET_PDEATHSIG)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rig-l1-{spec.cpu}")

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, lambda: fn(*args, **kw))

    async def __aenter__(self) -> EmulatedSession:
        from ..emulate.host import EmulatedHost

        host = EmulatedHost.from_spec(self.spec, workdir=self.workdir)
        self.host = host
        try:
            await self._call(host.__enter__)
        except BaseException:
            self._power_off()
            raise
        self.inputs = MeasuredInputs(self.spec, self.qemu, host.profile)
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            with contextlib.suppress(RigError):
                await self._call(self.host.__exit__, None, None, None)
        self._power_off()

    def _power_off(self) -> None:
        """Kill L1 now (also from the event loop while the thread waits on it), then let the thread go."""
        if self.host is not None:
            with contextlib.suppress(Exception):
                self.host.close()
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def observe(self, ctx: RunContext, case: Case, workdir: Path, started: asyncio.Event) -> CaseObservation:
        """The case's L2 probe in L1 (QMP first, then the probe) -- or, on the L2 machine ``kvmrun``, the probe
        in a bare KVM VM whose CPUID is L1's KVM_GET_SUPPORTED_CPUID as it is; its artifacts in ``workdir``."""
        m = case.machine_spec
        kvmrun = m.base == KVMRUN_MACHINE
        if kvmrun and (case.accel != "kvm" or case.cpu_arg != "host"):
            raise RigError(f"L2 machine kvmrun (no QEMU: KVM's supported CPUID as it is) runs -cpu host -accel kvm "
                           f"only, not -cpu {case.cpu_arg} -accel {case.accel}")
        if not kvmrun and (m.form != BootForm.PVH or case.accel != "kvm"):
            raise RigError(f"emulated hosts run -M microvm (or kvmrun) -accel kvm L2 cases only, not "
                           f"-M {case.machine} -accel {case.accel}")
        started.set()
        try:
            r = await self._call(self.host.run_probe, case.cpu_arg, m.base, timeout=case.timeout, qmp=not kvmrun)
        except asyncio.CancelledError:
            self._power_off()  # the thread waits on L1: stop it now
            raise
        (workdir / "cmdline.txt").write_text(
            "(inside L1) " + ("kvmrun /rig/probe.elf" if kvmrun else "qemu-system-x86_64") + " " + " ".join(r.args) + "\n")
        (workdir / "serial.log").write_text(r.serial)
        (workdir / "stderr.log").write_text(r.stderr)
        write_json(workdir / "qmp.json", {"replies": r.qmp, "errors": r.qmp_errors})
        reader = ProbeReader(case.id, workdir / "serial.log")
        code = _exit_code(r.exit_status)
        outcome, message = classify(
            exit_code=code, timed_out=r.timed_out, qmp_ready=bool(r.qmp) or code in (33, 35),
            qmp_error="; ".join(r.qmp_errors) or None, stderr=r.stderr, serial_text=r.serial,
            probe_check=reader, timeout=case.timeout, shutdown="L1's timeout (SIGKILL)")
        report = reader.report
        measured = self.host.profile.kvm.supported
        # kvmrun: configured = what KVM supports (set as it is); QEMU's guest rules do not apply (no QEMU in between)
        configured = feature_registers(measured) if kvmrun else r.feature_words()
        return CaseObservation(
            Outcome(outcome), message, None if kvmrun else self.host.outer_qemu_version, configured=configured,
            observed=report.tables if report is not None else {}, kvm_measured=measured,
            exit_code=r.exit_status,
            views={"l1": self.host.label, "form": "kvmrun" if kvmrun else m.form.value, "image": str(ctx.probe.pvh)})


def boot_failed(ctx: RunContext, spec: EmulatedHostSpec, cases: list[Case], error: RigError,
                seconds: float) -> list[CaseResult]:
    """Every case of a host whose L1 did not come up: a ``rig-error`` naming why."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [judge(CaseResult(c, Outcome.RIG_ERROR, message=f"emulated host {spec} did not come up: {error}",
                             duration_s=seconds, finished_at=stamp), ctx.matrix.fail_on) for c in cases]
