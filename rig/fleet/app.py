"""The Celery application: a Redis broker, one queue per host class, tasks acknowledged late.

Delivery guarantees come from three settings and the store:

* ``task_acks_late``: a shard's message is acknowledged only when its task returns,
  so a worker that dies (SIGKILL, power loss) leaves it unacknowledged and the broker
  delivers it again: with Redis, once it has been unacknowledged for
  ``redeliver_after`` seconds (kombu's ``visibility_timeout``);
* ``task_reject_on_worker_lost``: the same when a pool process dies under a live worker;
* ``worker_prefetch_multiplier = 1``: a worker holds no more shards than it runs;
* and :meth:`rig.fleet.store.FleetStore.claim_shard`'s lease: a message redelivered
  while its first worker still runs the shard waits and retries, it does not run twice.

The worker's own settings (:class:`WorkerConfig`) live on the app instance, not in globals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from .hostclass import queue_for

TASK_NAME = "rig.fleet.run_shard"
DEFAULT_REDELIVER_AFTER_S = 600.0


@dataclass(frozen=True)
class ShardSpec:
    """What a task message carries: a shard of a nightly for a host class."""

    nightly: str
    host_class: str
    shard: str
    matrix_path: str
    matrix_sha256: str
    k: str | None = None  # the -k selection of the submit, if any

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShardSpec:
        return cls(d["nightly"], d["host_class"], d["shard"], d["matrix_path"], d["matrix_sha256"], d.get("k"))


@dataclass(frozen=True)
class WorkerConfig:
    name: str             # Celery node name, also recorded with every result it stores
    host_class: str       # the class whose queue it consumes (computed, or --class)
    db: str               # history database URL
    jobs: int | None      # cases in parallel within a shard
    workdir: Path         # run directories (artifacts) of the shards it runs
    hostname: str
    host: dict[str, Any]  # this host's class fields, recorded with the class's first results


def make_app(broker: str, *, redeliver_after: float = DEFAULT_REDELIVER_AFTER_S,
             worker: WorkerConfig | None = None) -> Celery:
    from .tasks import run_shard_task

    app = Celery("rig.fleet", broker=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": redeliver_after,
                                  # sweep for unacknowledged messages often enough for the timeout chosen
                                  "unacked_restore_interval": max(1, min(10, int(redeliver_after // 4))),
                                  "unacked_restore_throttle": 1},
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_create_missing_queues=True,
    )
    app.conf.rig_worker = worker
    app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, max_retries=None)(run_shard_task)
    return app


def send_shard(app: Celery, spec: ShardSpec, *, expires: float | None = None, countdown: float | None = None) -> None:
    """Queue a shard on its class's queue; ``expires``: epoch seconds after which no worker starts it."""
    from datetime import UTC, datetime

    opts: dict[str, Any] = {"queue": queue_for(spec.host_class)}
    if expires is not None:
        opts["expires"] = datetime.fromtimestamp(expires, UTC)
    if countdown is not None:
        opts["countdown"] = countdown
    app.send_task(TASK_NAME, args=[spec.to_json()], **opts)
