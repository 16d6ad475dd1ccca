"""The fleet's one adapter to the run machinery: every import of ``rig.run``/``rig.matrix`` is here.

(So a change of where ``CaseResult``/``Case`` live is one edit.)  A shard runs exactly
as ``rig run MATRIX --shard I/N --jobs J`` would, in a run directory of its own on the
worker, minus the cases already stored in the fleet's history.
"""

from __future__ import annotations

import hashlib
import signal
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ..matrix.expand import expand
from ..matrix.load import load_matrix
from ..matrix.select import select
from ..results import Case, CaseResult
from ..run.driver import Interrupted, default_jobs, execute, finish, prepare
from ..run.progress import Progress

__all__ = ["Case", "CaseResult", "Interrupted", "default_jobs", "expected_shards", "matrix_sha256", "result_from_json",
           "run_shard", "system_qemu_version"]


#: the rig's source tree: matrices inside it travel as paths relative to it (workers' checkouts may be elsewhere)
RIG_TREE = Path(__file__).resolve().parents[2]


def matrix_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def matrix_reference(path: Path) -> str:
    """How a task names the matrix: relative to the rig's tree when inside it, else the absolute path."""
    path = path.resolve()
    try:
        return str(path.relative_to(RIG_TREE))
    except ValueError:
        return str(path)


def matrix_from_reference(ref: str) -> Path:
    p = Path(ref)
    return p if p.is_absolute() else RIG_TREE / p


def expected_shards(matrix_path: Path, shards: int, k: str | None = None) -> tuple[str, dict[str, list[Case]]]:
    """The matrix's name and its cases per shard ``"i/n"`` (the same selection as ``rig run -k K --shard``)."""
    matrix = load_matrix(matrix_path)
    cases = expand(matrix)
    return matrix.name, {f"{i}/{shards}": select(cases, k=k, shard=(i, shards)) for i in range(1, shards + 1)}


def result_from_json(d: dict[str, Any]) -> CaseResult:
    return CaseResult.from_json(d)


class _Hook(Progress):
    def __init__(self, total: int, done: int, hook: Callable[[CaseResult], None]) -> None:
        super().__init__(total, done=done, every_s=30.0)
        self.hook = hook

    def __call__(self, r: CaseResult) -> None:
        self.hook(r)  # stored before it is counted: a worker killed now loses at most the case in flight
        super().__call__(r)


def run_shard(matrix_path: Path, shard: str, *, k: str | None = None, exclude: Collection[str], out: Path,
              jobs: int | None, on_result: Callable[[CaseResult], None]) -> tuple[Path, list[CaseResult]]:
    """Run the shard's cases not in ``exclude``; ``on_result`` sees each case as it finishes.
    Returns the run directory and every result of this attempt.

    The run installs its own SIGTERM/SIGHUP handlers (a clean stop, no QEMU left); the worker's are
    put back afterwards, so a SIGTERM that interrupted the shard still stops the worker."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        plan = prepare(matrix_path, k=k, shard=shard, exclude=exclude, out=out,
                       argv=["rig", "fleet", "worker", str(matrix_path), "--shard", shard] + (["-k", k] if k else []))
        results = execute(plan, jobs=jobs, progress=_Hook(len(plan.cases), plan.resumed, on_result))
        finish(plan, results, history=False)  # the reports of this attempt, kept beside its artifacts
    finally:
        for sig, handler in saved.items():
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
    return plan.rundir.path, results


def system_qemu_version(spec: str = "system") -> str:
    from ..qemu.binaries import find_qemu

    return ".".join(map(str, find_qemu(spec).version))
