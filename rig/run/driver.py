"""A whole run: matrix -> cases -> run directory -> reports -> history.

Used by ``rig run`` and by the pytest plugin.  :func:`prepare` picks the cases
(``-k``, ``--shard``, minus those a resumed run finished already) and opens the
run directory; :func:`execute` runs them; :func:`finish` writes the reports and
records the run in the history database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..caseaxes import EmulatedHostSpec, GuestKind
from ..errors import RigError
from ..history.db import History, HistoryDiff
from ..history.fingerprint import HostFingerprint, current
from ..images.probe import build_probe
from ..matrix.expand import expand
from ..matrix.load import load_matrix
from ..matrix.model import Matrix
from ..matrix.select import parse_shard, select
from ..report.write import ReportPaths, write_reports
from ..results import Case, CaseResult
from .context import RunContext
from .execute import check_hosts, run_cases
from .predict import Predictor
from .progress import Progress
from .rundir import RunDir, RunInfo


class Interrupted(RigError):
    exit_code = 130


@dataclass
class Plan:
    matrix: Matrix
    rundir: RunDir
    cases: list[Case]            # every selected case
    todo: list[Case]             # not finished yet
    info: RunInfo
    resumed: int = 0             # finished in an earlier attempt
    stale: list[str] = field(default_factory=list)  # finished ids no longer in the matrix


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def prepare(matrix_path: str | Path | None, *, k: str | None = None, shard: str | None = None,
            resume: Path | None = None, out: Path | None = None, argv: list[str] | None = None,
            exclude: Collection[str] = ()) -> Plan:
    """``exclude``: case ids to leave out of the selection (the fleet passes the cases of a shard
    already stored elsewhere, so a redelivered shard runs only the others)."""
    if resume is not None:
        rd = RunDir.open_existing(resume)
        prev = rd.read_info()
        if matrix_path is not None and Path(matrix_path).resolve() != Path(prev["matrix"]).resolve():
            raise RigError(f"--resume {resume}: that run is of {prev['matrix']}, not {matrix_path}",
                           hint="drop the MATRIX argument or start a new run")
        matrix_path = prev["matrix"]
        if k is not None and k != prev.get("k") or shard is not None and shard != prev.get("shard"):
            raise RigError(f"--resume {resume}: -k/--shard differ from the interrupted run's "
                           f"(-k {prev.get('k')!r}, --shard {prev.get('shard')!r})", hint="resume without them")
        k, shard = prev.get("k"), prev.get("shard")
    if matrix_path is None:
        raise RigError("no matrix given", hint="rig run matrices/smoke.toml")
    matrix = load_matrix(matrix_path)
    cases = select(expand(matrix), k=k, shard=parse_shard(shard) if shard else None)
    if exclude:
        skip = set(exclude)
        cases = [c for c in cases if c.id not in skip]
    if not cases:
        raise RigError(f"{matrix_path}: no cases selected" + (f" by -k {k!r}" if k else "") +
                       (f" in shard {shard}" if shard else ""), hint="check -k/--shard; `rig run --list` shows the cases")
    check_hosts(cases)
    if resume is not None:
        rd.lock()
        rd.repair()
        info = RunInfo(**{key: v for key, v in prev.items() if key != "format"})
    else:
        rd = RunDir.create(out, matrix.name)
        rd.lock()
        info = RunInfo(matrix=str(Path(matrix_path).resolve()), matrix_name=matrix.name,
                       started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       argv=list(argv if argv is not None else sys.argv), shard=shard, k=k)
    finished = rd.finished()
    ids = {c.id for c in cases}
    todo = [c for c in cases if c.id not in finished]
    info.cases = len(cases)
    rd.write_info(info)
    return Plan(matrix, rd, cases, todo, info, resumed=len(cases) - len(todo),
                stale=sorted(set(finished) - ids))


async def _run_cancellable(ctx: RunContext, todo: list[Case], jobs: int, progress: Progress) -> list[CaseResult]:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run_cases(ctx, todo, jobs=jobs, on_result=progress))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, task.cancel)
        except (ValueError, RuntimeError):  # not the main thread (e.g. under some test runners)
            pass
    try:
        return await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                loop.remove_signal_handler(sig)
            except (ValueError, RuntimeError):
                pass


def execute(plan: Plan, *, jobs: int | None = None, progress: Progress | None = None,
            predictor: Predictor | None = None) -> list[CaseResult]:
    """Run the plan's remaining cases; Ctrl-C/SIGTERM stop it (no QEMU survives) and raise :class:`Interrupted`."""
    jobs = jobs or plan.matrix.jobs or default_jobs()
    progress = progress or Progress(len(plan.cases), done=plan.resumed)
    if plan.todo:
        ctx = RunContext(plan.matrix, plan.rundir, build_probe(), predictor or Predictor())
        from .linux_case import prepare_linux_images

        prepare_linux_images(ctx, plan.todo)
        if any(c.guest_spec.kind == GuestKind.SSH for c in plan.todo):
            from .linux_case import say_stderr
            from .ssh_case import prepare_ssh_image

            prepare_ssh_image(ctx, say_stderr)
        if predictor is None:
            _warm_facts(ctx, plan.todo)  # an empty cache: gathered here, not inside the loop
        fp = _fingerprint(ctx, plan)
        plan.info.host_fingerprint, plan.info.host = fp.fingerprint, fp.to_json()
        plan.rundir.write_info(plan.info)
        try:
            asyncio.run(_run_cancellable(ctx, plan.todo, jobs, progress))
        except (KeyboardInterrupt, asyncio.CancelledError):
            progress.finish()
            plan.rundir.close()
            done = len(plan.rundir.finished())
            raise Interrupted(f"interrupted after {done} of {len(plan.cases)} cases; finished cases are kept in "
                              f"{plan.rundir.path}", hint=f"resume with: rig run --resume {plan.rundir.path}") from None
        progress.finish()
    ids = {c.id for c in plan.cases}
    return [r for r in plan.rundir.results() if r.id in ids]


def _warm_facts(ctx: RunContext, cases: list[Case]) -> None:
    """Gather (or load from the cache) the facts of each QEMU the cases' predictions use, before the run's
    event loop starts, so the first case does not wait for a fresh binary's ``-S`` run.  A spec that names
    no binary is left for its cases to report."""
    specs = {"system" if isinstance(c.host_spec, EmulatedHostSpec) else c.qemu for c in cases}
    for spec in sorted(specs):
        try:
            ctx.qemu.facts(spec)
        except RigError:
            continue


def _fingerprint(ctx: RunContext, plan: Plan) -> HostFingerprint:
    qemu = plan.cases[0].qemu
    b = ctx.binary(qemu)
    return current(".".join(map(str, b.version)))


@dataclass
class Finished:
    reports: ReportPaths
    results: list[CaseResult]
    history_diff: HistoryDiff | None = None
    history_path: Path | None = None

    @property
    def unexpected(self) -> int:
        return sum(1 for r in self.results if r.verdict in ("fail", "error"))


def finish(plan: Plan, results: list[CaseResult], *, history: Path | None | bool = None) -> Finished:
    """Reports into the run directory; the run into the history DB (``history=False``: not recorded)."""
    paths = write_reports(plan.rundir, results, history=history if isinstance(history, Path) else None)
    out = Finished(paths, results)
    host = plan.rundir.read_info().get("host")
    if history is not False and host:
        with History(history if isinstance(history, Path) else None) as db:
            run_id = db.record(run_dir=plan.rundir.path, matrix=plan.matrix.name, host=HostFingerprint.from_json(host),
                               started_at=plan.info.started_at, results=results)
            row = db.run(run_id)
            prev = db.previous(row)
            out.history_path = db.path
            if prev is not None:
                out.history_diff = db.diff_runs(prev, row)
    plan.rundir.close()
    return out
