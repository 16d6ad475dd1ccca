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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from .shard import TASK_NAME, ShardSpec, send_shard

__all__ = ["DEFAULT_REDELIVER_AFTER_S", "TASK_NAME", "ShardSpec", "WorkerConfig", "make_app", "send_shard"]

DEFAULT_REDELIVER_AFTER_S = 600.0


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
