"""The shard task: run a nightly's shard for a host class on this worker, storing each case as it finishes."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from typing import Any

from celery.exceptions import Reject

from ..errors import RigError
from ..history.engine import DatabaseError
from .hostclass import is_portable, queue_for
from .runner import CaseResult, Interrupted, matrix_from_reference, matrix_sha256, run_shard
from .store import HEARTBEAT_S, LEASE_STALE_S, FleetStore

DB_RETRY_S = 30.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


class _Heartbeat(threading.Thread):
    """Keeps the shard's lease alive from a connection of its own."""

    def __init__(self, db: str, nightly: str, host_class: str, shard: str, worker: str) -> None:
        super().__init__(daemon=True, name="rig-fleet-heartbeat")
        self.args_ = (nightly, host_class, shard, worker)
        self.db = db
        self.stop = threading.Event()

    def run(self) -> None:
        with FleetStore(self.db) as store:
            while not self.stop.wait(HEARTBEAT_S):
                store.heartbeat(*self.args_)


def run_shard_task(task: Any, spec_json: dict[str, Any]) -> dict[str, Any]:
    from .shard import ShardSpec

    spec = ShardSpec.from_json(spec_json)
    cfg = task.app.conf.rig_worker
    if cfg is None:
        raise RuntimeError("rig.fleet.run_shard runs only in `rig fleet worker`")
    try:
        return _run(task, spec, cfg, spec_json)
    except DatabaseError as e:  # the history database is unreachable: keep the shard, look again later
        print(f"rig fleet worker {cfg.name}: {e}; shard {spec.shard} of {spec.host_class} retried in "
              f"{DB_RETRY_S:.0f} s", file=sys.stderr, flush=True)
        raise task.retry(args=[spec_json], countdown=DB_RETRY_S, queue=queue_for(spec.host_class),
                         max_retries=None) from None


def _run(task: Any, spec: Any, cfg: Any, spec_json: dict[str, Any]) -> dict[str, Any]:
    from .shard import send_shard

    n, cls, shard = spec.nightly, spec.host_class, spec.shard
    with FleetStore(cfg.db) as store:
        nightly = store.nightly(n)
        if not is_portable(cls) and cls != cfg.host_class:
            send_shard(task.app, spec, expires=nightly.deadline_at)  # to its own class's queue, where its workers are
            store.event(n, cls, shard, cfg.name, cfg.host_class, "refused",
                        f"worker of class {cfg.host_class} refused shard {shard} of class {cls}; "
                        f"sent back to queue {queue_for(cls)}")
            return {"refused": True}
        if nightly.closed_at is not None:
            store.event(n, cls, shard, cfg.name, cfg.host_class, "late", "the nightly is closed; shard not run")
            return {"late": True}
        matrix = matrix_from_reference(spec.matrix_path)
        try:
            sha = matrix_sha256(matrix)
        except OSError as e:
            sha = f"unreadable: {e.strerror}"
        if sha != spec.matrix_sha256:
            store.event(n, cls, shard, cfg.name, cfg.host_class, "failed",
                        f"{matrix}: not the submitted matrix (sha256 {sha[:12]}, submitted {spec.matrix_sha256[:12]}); "
                        "run workers from a checkout with the same matrices")
            return {"failed": "matrix"}
        state = store.claim_shard(n, cls, shard, cfg.name)
        if state == "done":
            return {"done": 0}
        if state == "busy":  # redelivered while its first worker still runs it: look again later
            raise task.retry(args=[spec_json], countdown=LEASE_STALE_S, queue=queue_for(cls), max_retries=None)
        stored = store.stored_ids(n, cls)
        if not store.expected(n, cls, shard) - stored:
            store.release_shard(n, cls, shard, cfg.name, "done")
            return {"done": 0}
        if stored & store.expected(n, cls, shard):
            store.event(n, cls, shard, cfg.name, cfg.host_class, "redelivered",
                        f"{len(stored & store.expected(n, cls, shard))} case(s) of the shard already stored; "
                        "running the others")
        if not is_portable(cls):
            from ..history.fingerprint import HostFingerprint

            h = cfg.host
            fp = HostFingerprint(cfg.hostname, h.get("model_name", ""), h.get("microcode", ""), h.get("kernel", ""),
                                 h.get("qemu", ""))
            store.set_class_host(n, cls, fp.to_json(), fp.fingerprint)
        out = (cfg.workdir / _slug(n) / _slug(cls) /
               f"shard-{shard.replace('/', '-of-')}-{_slug(cfg.name)}-{int(time.time() * 1000)}")
        stored_now = 0

        def keep(r: CaseResult) -> None:
            nonlocal stored_now
            if store.store_result(n, cls, r, worker=cfg.name, worker_class=cfg.host_class,
                                  artifacts=f"{cfg.hostname}:{out / r.artifacts}" if r.artifacts else f"{cfg.hostname}:{out}"):
                stored_now += 1

        beat = _Heartbeat(cfg.db, n, cls, shard, cfg.name)
        beat.start()
        try:
            _, results = run_shard(matrix, shard, k=spec.k, exclude=stored, out=out, jobs=cfg.jobs, on_result=keep)
        except Interrupted as e:  # SIGTERM: give the shard back (its finished cases are stored), then stop
            store.release_shard(n, cls, shard, cfg.name, "queued")
            os.kill(os.getpid(), signal.SIGTERM)  # to the worker's own handler: a warm shutdown after this task
            raise Reject(str(e), requeue=True) from None
        except RigError as e:
            store.event(n, cls, shard, cfg.name, cfg.host_class, "failed", f"{e}")
            store.release_shard(n, cls, shard, cfg.name, "failed")
            return {"failed": str(e)}
        finally:
            beat.stop.set()
            beat.join()
        for r in results:  # any the callback did not see (none expected): stored once all the same
            keep(r)
        store.release_shard(n, cls, shard, cfg.name, "done")
        return {"done": stored_now}
