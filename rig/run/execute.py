"""Running cases.  One case is the data flow of :func:`run_case`:

    inputs  = the host's model inputs             (rig.run.hosts; an emulated host's from its L1)
    observe = a runner chosen by guest kind        (probe, linux, ssh; an emulated host's L2 probe;
              started first: QEMU starts up ...     a simulated host's "no QEMU")
    predict = the QEMU model on the inputs         (... while the prediction is made: rig.run.predict)
    result  = assemble(prediction, observation)    (compare, judge, views.json: rig.run.assemble)

:func:`run_cases` runs many with ``jobs`` workers in one event loop (each worker waits
on its QEMU, so the loop is idle most of the time); the cases of one emulated host are
one work item (one L1 boot, its cases in turn).  Every finished result goes to the run
directory at once, so an interrupted run keeps what finished.  A case cut short by
cancellation (Ctrl-C, SIGTERM) is not a result: nothing is recorded for it, its QEMU
is killed, and ``rig run --resume`` runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..caseaxes import EmulatedHostSpec, GuestKind, SimulatedHost
from ..cpuid.table import CpuidTable
from ..errors import RigError
from ..results import Case, CaseResult, Outcome, judge
from .assemble import assemble
from .checks import check_case_guest
from .context import RunContext
from .hosts import HostInputs, inputs_for
from .observation import CaseObservation

__all__ = ["RunContext", "check_hosts", "load_views", "run_case", "run_cases"]


class Runner(Protocol):
    """Observes one case: starts what the case runs, sets ``started`` once QEMU is starting."""

    def __call__(self, ctx: RunContext, case: Case, workdir: Path,
                 started: asyncio.Event) -> Awaitable[CaseObservation]: ...


def check_hosts(cases: Sequence[Case]) -> None:
    """Fail early (before any QEMU starts) for hosts or guests this rig cannot run."""
    for c in cases:
        check_case_guest(c)


async def observe_simulated(ctx: RunContext, case: Case, workdir: Path, started: asyncio.Event) -> CaseObservation:
    """A simulated host starts no QEMU: the prediction is the result."""
    binary = ctx.binary(case.qemu)
    started.set()
    return CaseObservation(Outcome.SIMULATED, "prediction only (no QEMU started)", ".".join(map(str, binary.version)))


def runner_for(case: Case) -> Runner:
    """The runner of a case on this machine (native or simulated host), by guest kind."""
    if isinstance(case.host_spec, SimulatedHost):
        return observe_simulated
    kind = case.guest_spec.kind
    if kind == GuestKind.LINUX:
        from .linux_case import observe_linux

        return observe_linux
    if kind == GuestKind.SSH:
        from .ssh_case import observe_ssh

        return observe_ssh
    from .probe_case import observe_probe

    return observe_probe


class Host(Protocol):
    """Where a case runs: the model's inputs and the runner (an :class:`rig.run.emulated.EmulatedSession`)."""

    inputs: HostInputs | None

    def observe(self, ctx: RunContext, case: Case, workdir: Path,
                started: asyncio.Event) -> Awaitable[CaseObservation]: ...


async def run_case(ctx: RunContext, case: Case, host: Host | None = None) -> CaseResult:
    """One case (``host``: an emulated host's session; None: this machine)."""
    t0 = time.perf_counter()
    workdir = ctx.rundir.case_dir(case.id)
    try:
        inputs, observe = _where(ctx, case, host)
        started = asyncio.Event()
        async with _concurrently(observe(ctx, case, workdir, started)) as observing:
            await _first(started, observing)          # QEMU is starting up ...
            prediction = ctx.predictor(case, inputs)  # ... while the model predicts (it never sees QEMU's answers)
            observation = await observing
        result = assemble(case, prediction, observation, workdir, known=ctx.matrix.known_issues,
                          fail_on=ctx.matrix.fail_on, host_raw=_host_raw(ctx, case, observation))
    except RigError as e:
        result = judge(CaseResult(case, Outcome.RIG_ERROR, message=str(e)), ctx.matrix.fail_on)
    result.artifacts = str(workdir.relative_to(ctx.rundir.path))
    result.duration_s = time.perf_counter() - t0
    result.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return result


def _where(ctx: RunContext, case: Case, host: Host | None) -> tuple[HostInputs, Runner]:
    """The model's inputs and the runner: an emulated host's, or this machine's by host and guest kind."""
    if host is not None:
        if host.inputs is None:
            raise RigError(f"case {case.id}: its emulated host is not up")
        return host.inputs, host.observe
    return inputs_for(case.host_spec, ctx.qemu, ctx.host_inputs), runner_for(case)


def _host_raw(ctx: RunContext, case: Case, observation: CaseObservation) -> CpuidTable | None:
    """This machine's raw CPUID, read only for cases that may show a host quirk."""
    return ctx.host_raw() if observation.quirks_possible and case.accel == "kvm" else None


@contextlib.asynccontextmanager
async def _concurrently(work: Awaitable[CaseObservation]) -> AsyncIterator[asyncio.Future[CaseObservation]]:
    """``work`` as a task of its own; leaving the block early (an error, cancellation) cancels it and waits."""
    task = asyncio.ensure_future(work)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _first(started: asyncio.Event, observing: asyncio.Future) -> None:
    """Until ``started`` is set or the observation is over (it may fail before QEMU starts)."""
    if started.is_set() or observing.done():
        return
    waiter = asyncio.ensure_future(started.wait())
    try:
        await asyncio.wait({waiter, observing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


ProgressFn = Callable[[CaseResult], None]


async def run_cases(ctx: RunContext, cases: Sequence[Case], *, jobs: int,
                    on_result: ProgressFn | None = None) -> list[CaseResult]:
    """Run ``cases`` with ``jobs`` workers; every result is appended to the run directory as it finishes.

    Cases of one emulated host form one work item (one L1 boot, its L2 cases in turn)."""
    queue: asyncio.Queue[Case | tuple[EmulatedHostSpec, list[Case]]] = asyncio.Queue()
    groups: dict[str, tuple[EmulatedHostSpec, list[Case]]] = {}
    for c in cases:
        if isinstance(c.host_spec, EmulatedHostSpec):
            if c.host not in groups:
                groups[c.host] = (c.host_spec, [])
                queue.put_nowait(groups[c.host])
            groups[c.host][1].append(c)
        else:
            queue.put_nowait(c)
    results: list[CaseResult] = []

    def record(r: CaseResult) -> None:
        ctx.rundir.append(r)
        results.append(r)
        if on_result is not None:
            on_result(r)

    async def emulated(spec: EmulatedHostSpec, group: list[Case]) -> None:
        from .emulated import EmulatedSession, boot_failed

        t0 = time.perf_counter()
        session = EmulatedSession(spec, ctx.rundir.path / "hosts" / str(spec).replace(":", "-"), ctx.qemu)
        try:
            await session.__aenter__()
        except RigError as e:
            for r in boot_failed(ctx, spec, group, e, time.perf_counter() - t0):
                record(r)
            return
        try:
            for c in group:
                record(await run_case(ctx, c, session))
        except BaseException:
            await session.__aexit__(asyncio.CancelledError, None, None)
            raise
        await session.__aexit__(None, None, None)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if isinstance(item, tuple):
                await emulated(*item)
            else:
                record(await run_case(ctx, item))

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(jobs, queue.qsize() or 1)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return results


def load_views(run_path: Path, result: CaseResult) -> dict[str, Any]:
    p = run_path / result.artifacts / "views.json"
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RigError(f"{p}: cannot read the case's views: {e}") from None
