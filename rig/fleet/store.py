"""The fleet's records in the history database (PostgreSQL for a fleet; SQLite works too).

A nightly is a row of ``fleet_nightlies``, one ``runs`` row per host class (so
``rig history`` compares a class's nightly with its previous one like any run), the
cases each class owes (``fleet_expected``) and its shards (``fleet_shards``).

* :meth:`FleetStore.store_result` inserts a case's result with ``ON CONFLICT DO
  NOTHING`` on the (run = nightly × class, case) primary key: exactly once, whoever
  delivers it twice.
* :meth:`FleetStore.claim_shard` is a lease (worker name + heartbeat): a shard
  redelivered while its first worker still runs it waits; one whose worker died
  (no heartbeat for :data:`LEASE_STALE_S`) is taken over.
* :meth:`FleetStore.close` records every expected case without a result as
  ``missing`` (with its class): at the deadline, or once all are stored.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RigError
from ..history.db import FINDINGS_INSERT, History, finding_rows, result_row
from .runner import CaseResult

HEARTBEAT_S = 5.0
LEASE_STALE_S = 20.0
MISSING = "missing"
_EMPTY_HOST = {"hostname": "", "cpu_model": "", "microcode": "", "kernel": "", "qemu": ""}


class FleetError(RigError):
    pass


def utc(ts: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "-"


@dataclass
class Nightly:
    id: str
    matrix: str
    matrix_path: str
    matrix_sha256: str
    shards: int
    created_at: float
    deadline_at: float | None
    closed_at: float | None


@dataclass
class ClassProgress:
    host_class: str
    expected: int
    verdicts: Counter = field(default_factory=Counter)
    shards: Counter = field(default_factory=Counter)

    @property
    def stored(self) -> int:
        return sum(self.verdicts.values())

    def line(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(self.verdicts.items()))
        shards = ", ".join(f"{n} {s}" for s, n in sorted(self.shards.items()))
        return f"{self.host_class}: {self.stored}/{self.expected} stored ({counts or 'none yet'}); shards: {shards}"


class FleetStore:
    def __init__(self, where: str | Path) -> None:
        self.history = History(where)
        self.db = self.history.db
        self.where = self.history.path
        self._run_ids: dict[tuple[str, str], int] = {}

    def close_db(self) -> None:
        self.history.close()

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_db()

    # -- nightlies ---------------------------------------------------------------------
    def create_nightly(self, n: Nightly, plan: dict[str, dict[str, list[str]]]) -> None:
        """``plan``: host class -> shard -> case ids."""
        with self.db.transaction():
            self.db.execute("INSERT INTO fleet_nightlies(id, matrix, matrix_path, matrix_sha256, shards, created_at,"
                            " deadline_at, closed_at) VALUES (?,?,?,?,?,?,?,NULL)",
                            (n.id, n.matrix, n.matrix_path, n.matrix_sha256, n.shards, n.created_at, n.deadline_at))
            for cls, shards in plan.items():
                total = sum(len(v) for v in shards.values())
                self.db.execute(
                    "INSERT INTO runs(run_dir, matrix, host_key, fingerprint, host_json, started_at, recorded_at, cases,"
                    " failed, nightly, host_class) VALUES (?,?,?,?,?,?,?,?,0,?,?)",
                    (f"fleet:{n.id}:{cls}", n.matrix, cls, "", json.dumps({**_EMPTY_HOST, "cpu_model": cls}),
                     utc(n.created_at), utc(n.created_at), total, n.id, cls))
                for shard, ids in shards.items():
                    if not ids:
                        continue
                    self.db.execute("INSERT INTO fleet_shards(nightly, host_class, shard, cases, state) "
                                    "VALUES (?,?,?,?,'queued')", (n.id, cls, shard, len(ids)))
                    self.db.executemany("INSERT INTO fleet_expected(nightly, host_class, case_id, shard) VALUES (?,?,?,?)",
                                        [(n.id, cls, cid, shard) for cid in ids])

    def nightly(self, nightly_id: str | None) -> Nightly:
        """A nightly by id (``None`` or ``latest``: the newest)."""
        if nightly_id in (None, "latest"):
            t = self.db.one("SELECT id, matrix, matrix_path, matrix_sha256, shards, created_at, deadline_at, closed_at "
                            "FROM fleet_nightlies ORDER BY created_at DESC LIMIT 1")
        else:
            t = self.db.one("SELECT id, matrix, matrix_path, matrix_sha256, shards, created_at, deadline_at, closed_at "
                            "FROM fleet_nightlies WHERE id = ?", (nightly_id,))
        if t is None:
            raise FleetError(f"{self.where}: no nightly {nightly_id!r}" if nightly_id not in (None, "latest")
                             else f"{self.where}: no nightly recorded",
                             hint="`rig fleet status --db URL` lists nightlies; `rig fleet submit` creates one")
        return Nightly(*t)

    def nightlies(self) -> list[Nightly]:
        return [Nightly(*t) for t in self.db.all(
            "SELECT id, matrix, matrix_path, matrix_sha256, shards, created_at, deadline_at, closed_at "
            "FROM fleet_nightlies ORDER BY created_at")]

    def classes(self, nightly_id: str) -> list[str]:
        return [t[0] for t in self.db.all("SELECT host_class FROM runs WHERE nightly = ? ORDER BY host_class",
                                          (nightly_id,))]

    def _run_id(self, nightly_id: str, host_class: str) -> int:
        key = (nightly_id, host_class)
        if key not in self._run_ids:  # a (nightly, class)'s run row never changes once created
            t = self.db.one("SELECT id FROM runs WHERE nightly = ? AND host_class = ?", key)
            if t is None:
                raise FleetError(f"nightly {nightly_id} has no host class {host_class!r}")
            self._run_ids[key] = int(t[0])
        return self._run_ids[key]

    def expected(self, nightly_id: str, host_class: str, shard: str | None = None) -> set[str]:
        q, a = "SELECT case_id FROM fleet_expected WHERE nightly = ? AND host_class = ?", [nightly_id, host_class]
        if shard:
            q += " AND shard = ?"
            a.append(shard)
        return {t[0] for t in self.db.all(q, a)}

    def stored_ids(self, nightly_id: str, host_class: str) -> set[str]:
        return {t[0] for t in self.db.all("SELECT case_id FROM results WHERE run_id = ?",
                                          (self._run_id(nightly_id, host_class),))}

    # -- results -----------------------------------------------------------------------
    def store_result(self, nightly_id: str, host_class: str, r: CaseResult, *, worker: str, worker_class: str,
                     artifacts: str) -> bool:
        """Store a finished case once; False if (nightly, class, case) already had a row (the case is then
        recorded as an event when that row is ``missing``: it finished after the deadline)."""
        run_id = self._run_id(nightly_id, host_class)
        with self.db.transaction():
            row = self.db.one(
                "INSERT INTO results(run_id, case_id, outcome, verdict, words, duration_s, finished_at, worker,"
                " worker_class, artifacts, result_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING RETURNING case_id",
                (*result_row(run_id, r), worker, worker_class, artifacts, json.dumps(r.to_json(), separators=(",", ":"))))
            if row is None:
                old = self.db.one("SELECT verdict FROM results WHERE run_id = ? AND case_id = ?", (run_id, r.id))
                if old and old[0] == MISSING:
                    self.event(nightly_id, host_class, None, worker, worker_class, "late",
                               f"{r.id} finished ({r.verdict}) after the nightly was closed; kept as missing")
                return False
            self.db.executemany(FINDINGS_INSERT, finding_rows(run_id, r))
        return True

    def set_class_host(self, nightly_id: str, host_class: str, host: dict[str, Any], fingerprint: str) -> None:
        """The first worker of a class records what the class's host is (for ``rig history``'s host changes)."""
        self.db.execute("UPDATE runs SET host_json = ?, fingerprint = ? WHERE nightly = ? AND host_class = ? "
                        "AND fingerprint = ''", (json.dumps(host), fingerprint, nightly_id, host_class))

    def results(self, nightly_id: str) -> list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT r.host_class, s.case_id, s.outcome, s.verdict, s.duration_s, s.finished_at, s.worker,"
            " s.worker_class, s.artifacts, s.result_json FROM results s JOIN runs r ON r.id = s.run_id"
            " WHERE r.nightly = ? ORDER BY r.host_class, s.case_id", (nightly_id,))
        return [{"host_class": t[0], "case_id": t[1], "outcome": t[2], "verdict": t[3], "duration_s": t[4],
                 "finished_at": t[5], "worker": t[6], "worker_class": t[7], "artifacts": t[8],
                 "result": json.loads(t[9]) if t[9] else None} for t in rows]

    # -- shards ------------------------------------------------------------------------
    def claim_shard(self, nightly_id: str, host_class: str, shard: str, worker: str, now: float | None = None) -> str:
        """``claimed`` (this worker runs it now), ``done`` (nothing left), or ``busy`` (a live worker has it)."""
        now = time.time() if now is None else now
        with self.db.transaction():
            lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE serialises
            t = self.db.one("SELECT state, worker, heartbeat_at FROM fleet_shards WHERE nightly = ? AND host_class = ?"
                            " AND shard = ?" + lock, (nightly_id, host_class, shard))
            if t is None:
                raise FleetError(f"nightly {nightly_id}: no shard {shard} for class {host_class}")
            state, holder, beat = t
            if state == "done":
                return "done"
            if state == "running" and holder != worker and beat is not None and now - beat < LEASE_STALE_S:
                return "busy"
            if state == "running" and holder != worker:
                self.event(nightly_id, host_class, shard, worker, None, "takeover",
                           f"{holder} stopped heartbeating {now - (beat or now):.0f} s ago; shard taken over")
            self.db.execute("UPDATE fleet_shards SET state = 'running', worker = ?, heartbeat_at = ?, started_at = ?,"
                            " attempts = attempts + 1 WHERE nightly = ? AND host_class = ? AND shard = ?",
                            (worker, now, now, nightly_id, host_class, shard))
        return "claimed"

    def heartbeat(self, nightly_id: str, host_class: str, shard: str, worker: str) -> None:
        self.db.execute("UPDATE fleet_shards SET heartbeat_at = ? WHERE nightly = ? AND host_class = ? AND shard = ?"
                        " AND worker = ?", (time.time(), nightly_id, host_class, shard, worker))

    def release_shard(self, nightly_id: str, host_class: str, shard: str, worker: str, state: str) -> None:
        """``done``, ``failed`` (the rig could not run it; see events), or ``queued`` (interrupted, requeued)."""
        self.db.execute("UPDATE fleet_shards SET state = ?, heartbeat_at = NULL, finished_at = ? WHERE nightly = ? AND"
                        " host_class = ? AND shard = ? AND worker = ?",
                        (state, time.time(), nightly_id, host_class, shard, worker))

    def shards(self, nightly_id: str) -> list[tuple[str, str, int, str, str | None, int]]:
        return [tuple(t) for t in self.db.all(
            "SELECT host_class, shard, cases, state, worker, attempts FROM fleet_shards WHERE nightly = ?"
            " ORDER BY host_class, shard", (nightly_id,))]

    # -- events ------------------------------------------------------------------------
    def event(self, nightly_id: str, host_class: str, shard: str | None, worker: str | None, worker_class: str | None,
              kind: str, detail: str) -> None:
        self.db.execute("INSERT INTO fleet_events(nightly, host_class, shard, worker, worker_class, kind, detail, at)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        (nightly_id, host_class, shard, worker, worker_class, kind, detail, time.time()))

    def events(self, nightly_id: str, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT host_class, shard, worker, worker_class, kind, detail, at FROM fleet_events"
                           " WHERE nightly = ? ORDER BY id", (nightly_id,))
        keep = set(kinds) if kinds else None
        return [dict(zip(("host_class", "shard", "worker", "worker_class", "kind", "detail", "at"), t, strict=True))
                for t in rows if keep is None or t[4] in keep]

    # -- progress and closing ----------------------------------------------------------
    def progress(self, nightly_id: str) -> dict[str, ClassProgress]:
        out = {cls: ClassProgress(cls, n) for cls, n in self.db.all(
            "SELECT host_class, cases FROM runs WHERE nightly = ? ORDER BY host_class", (nightly_id,))}
        for cls, verdict, n in self.db.all(
                "SELECT r.host_class, s.verdict, COUNT(*) FROM results s JOIN runs r ON r.id = s.run_id"
                " WHERE r.nightly = ? GROUP BY r.host_class, s.verdict", (nightly_id,)):
            out[cls].verdicts[verdict] = int(n)
        for cls, state, n in self.db.all("SELECT host_class, state, COUNT(*) FROM fleet_shards WHERE nightly = ?"
                                         " GROUP BY host_class, state", (nightly_id,)):
            out[cls].shards[state] = int(n)
        return out

    def complete(self, nightly_id: str) -> bool:
        return all(p.stored >= p.expected for p in self.progress(nightly_id).values())

    def close(self, nightly_id: str, now: float | None = None) -> int:
        """Record every expected case without a result as missing; returns how many (idempotent)."""
        now = time.time() if now is None else now
        missing = 0
        with self.db.transaction():
            for cls in self.classes(nightly_id):
                run_id = self._run_id(nightly_id, cls)
                ids = sorted(self.expected(nightly_id, cls) - self.stored_ids(nightly_id, cls))
                self.db.executemany(
                    "INSERT INTO results(run_id, case_id, outcome, verdict, words, finished_at, result_json)"
                    " VALUES (?,?,?,?,'{}',?,NULL) ON CONFLICT DO NOTHING",
                    [(run_id, cid, MISSING, MISSING, utc(now)) for cid in ids])
                missing += len(ids)
                self.db.execute("UPDATE runs SET recorded_at = ?, failed = (SELECT COUNT(*) FROM results WHERE run_id = ?"
                                " AND verdict IN ('fail', 'error', 'missing')) WHERE id = ?", (utc(now), run_id, run_id))
            self.db.execute("UPDATE fleet_nightlies SET closed_at = ? WHERE id = ? AND closed_at IS NULL",
                            (now, nightly_id))
        return missing

    def close_if_due(self, n: Nightly, now: float | None = None) -> Nightly:
        """Close a nightly whose deadline has passed (whoever looks first: submit --wait, status, results)."""
        now = time.time() if now is None else now
        if n.closed_at is None and n.deadline_at is not None and now >= n.deadline_at:
            self.close(n.id, now)
            return self.nightly(n.id)
        return n
