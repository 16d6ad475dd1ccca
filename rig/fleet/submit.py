"""Creating a nightly: expand the matrix, split it into shards per host class, queue them; waiting for it."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import TextIO

from celery import Celery

from ..errors import RigError
from .app import ShardSpec, send_shard
from .hostclass import class_of_case_host
from .runner import expected_shards, matrix_reference, matrix_sha256
from .store import ClassProgress, FleetError, FleetStore, Nightly


def plan_nightly(matrix: Path, classes: list[str], shards: int,
                 k: str | None = None) -> tuple[str, dict[str, dict[str, list[str]]]]:
    """The matrix's name and host class -> shard -> case ids.  Native cases go to every class given;
    cases on emulated hosts to their own class, once."""
    name, per_shard = expected_shards(matrix, shards, k)
    if not any(per_shard.values()):
        raise FleetError(f"{matrix}: no cases selected" + (f" by -k {k!r}" if k else ""),
                         hint="`rig run --list MATRIX [-k EXPR]` shows the cases")
    plan: dict[str, dict[str, list[str]]] = {}
    native = 0
    for shard, cases in per_shard.items():
        for c in cases:
            own = class_of_case_host(c.host)
            if own is None:
                native += 1
            for cls in [own] if own else classes:
                plan.setdefault(cls, {}).setdefault(shard, []).append(c.id)
    if native and not classes:
        raise FleetError(f"{matrix}: {native} case(s) run on the worker's own host, and no --classes given",
                         hint="name the host classes to run them on: --classes A,B (`rig fleet worker` prints its class)")
    return name, plan


def submit(app: Celery, store: FleetStore, matrix: Path, *, classes: list[str], shards: int,
           deadline_min: float | None, nightly_id: str | None = None, k: str | None = None) -> Nightly:
    name, plan = plan_nightly(matrix, classes, shards, k)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=3)
    except Exception as e:  # kombu raises the transport's own errors
        raise RigError(f"broker {app.conf.broker_url}: cannot connect: {e}", hint="check --broker and that Redis runs") from None
    now = time.time()
    nid = nightly_id or f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{secrets.token_hex(2)}"
    n = Nightly(nid, name, matrix_reference(matrix), matrix_sha256(matrix), shards, now,
                now + deadline_min * 60 if deadline_min is not None else None, None)
    store.create_nightly(n, plan)
    for cls, per_shard in plan.items():
        for shard, ids in per_shard.items():
            if ids:
                send_shard(app, ShardSpec(nid, cls, shard, n.matrix_path, n.matrix_sha256, k), expires=n.deadline_at)
    return n


def summary_lines(progress: dict[str, ClassProgress]) -> list[str]:
    return [p.line() for p in progress.values()]


def wait(store: FleetStore, n: Nightly, *, out: TextIO = sys.stderr, poll_s: float = 2.0, every_s: float = 10.0) -> Nightly:
    """Until every case of every class is stored, or the deadline (then the rest is recorded missing)."""
    last, shown = "", 0.0
    while True:
        n = store.close_if_due(store.nightly(n.id))
        progress = store.progress(n.id)
        text = "\n".join(summary_lines(progress))
        now = time.time()
        if text != last and now - shown >= every_s or n.closed_at is not None:
            left = f", deadline in {max(0, n.deadline_at - now) / 60:.1f} min" if n.deadline_at and not n.closed_at else ""
            out.write(f"nightly {n.id}{left}:\n" + "\n".join("  " + x for x in text.splitlines()) + "\n")
            out.flush()
            last, shown = text, now
        if n.closed_at is not None:
            return n
        if store.complete(n.id):
            store.close(n.id)
            continue
        time.sleep(poll_s)
