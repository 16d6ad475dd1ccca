"""A shard of a nightly for a host class: what a task message carries, and how it is queued."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery

from .hostclass import queue_for

TASK_NAME = "rig.fleet.run_shard"


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


def send_shard(app: Celery, spec: ShardSpec, *, expires: float | None = None, countdown: float | None = None) -> None:
    """Queue a shard on its class's queue; ``expires``: epoch seconds after which no worker starts it."""
    from datetime import UTC, datetime

    opts: dict[str, Any] = {"queue": queue_for(spec.host_class)}
    if expires is not None:
        opts["expires"] = datetime.fromtimestamp(expires, UTC)
    if countdown is not None:
        opts["countdown"] = countdown
    app.send_task(TASK_NAME, args=[spec.to_json()], **opts)
