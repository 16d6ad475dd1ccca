"""The history schema, one for SQLite and PostgreSQL, with its version and migrations.

``schema_version`` holds one row: the version the database is at.  :func:`migrate`
applies the missing steps of :data:`MIGRATIONS` in one transaction each, so a
database written by an older rig is brought up to date when it is opened
(version 1 is the single-host schema as it was before versions existed: its
``IF NOT EXISTS`` adopts such files).  A database *newer* than this rig is
refused rather than misread.

Tables: ``runs``, ``results``, ``findings`` (every run: a ``rig run`` on one host,
or one host class of a fleet nightly, ``runs.nightly``/``runs.host_class`` set);
``fleet_nightlies``, ``fleet_expected`` (the cases each class owes),
``fleet_shards`` (queue state and leases), ``fleet_events`` (refusals, redeliveries,
late results).  ``results`` has one row per (run, case): for the fleet that is
per (nightly, host class, case), the primary key that makes storing exactly-once.
"""

from __future__ import annotations

from .engine import Database, DatabaseError

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "single-host history: runs, results, findings", (
        """CREATE TABLE IF NOT EXISTS runs(
  id {id}, run_dir TEXT UNIQUE NOT NULL, matrix TEXT NOT NULL, host_key TEXT NOT NULL,
  fingerprint TEXT NOT NULL, host_json TEXT NOT NULL, started_at TEXT, recorded_at TEXT NOT NULL,
  cases INTEGER NOT NULL, failed INTEGER NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS results(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, case_id TEXT NOT NULL, outcome TEXT NOT NULL,
  verdict TEXT NOT NULL, words TEXT NOT NULL, PRIMARY KEY(run_id, case_id))""",
        """CREATE TABLE IF NOT EXISTS findings(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, case_id TEXT NOT NULL, key TEXT NOT NULL,
  name TEXT NOT NULL, cls TEXT NOT NULL, layer TEXT NOT NULL, issue TEXT)""",
        "CREATE INDEX IF NOT EXISTS runs_host ON runs(host_key, id)",
        "CREATE INDEX IF NOT EXISTS findings_run ON findings(run_id)",
    )),
    (2, "fleet: nightlies, host classes, per-case details, shards and events", (
        "ALTER TABLE runs ADD COLUMN nightly TEXT",
        "ALTER TABLE runs ADD COLUMN host_class TEXT",
        "ALTER TABLE results ADD COLUMN duration_s {float}",
        "ALTER TABLE results ADD COLUMN finished_at TEXT",
        "ALTER TABLE results ADD COLUMN worker TEXT",
        "ALTER TABLE results ADD COLUMN worker_class TEXT",
        "ALTER TABLE results ADD COLUMN artifacts TEXT",
        "ALTER TABLE results ADD COLUMN result_json TEXT",
        "CREATE INDEX runs_nightly ON runs(nightly, host_class)",
        """CREATE TABLE fleet_nightlies(
  id TEXT PRIMARY KEY, matrix TEXT NOT NULL, matrix_path TEXT NOT NULL, matrix_sha256 TEXT NOT NULL,
  shards INTEGER NOT NULL, created_at {float} NOT NULL, deadline_at {float}, closed_at {float})""",
        """CREATE TABLE fleet_expected(
  nightly TEXT NOT NULL REFERENCES fleet_nightlies(id) ON DELETE CASCADE, host_class TEXT NOT NULL,
  case_id TEXT NOT NULL, shard TEXT NOT NULL, PRIMARY KEY(nightly, host_class, case_id))""",
        """CREATE TABLE fleet_shards(
  nightly TEXT NOT NULL REFERENCES fleet_nightlies(id) ON DELETE CASCADE, host_class TEXT NOT NULL,
  shard TEXT NOT NULL, cases INTEGER NOT NULL, state TEXT NOT NULL, worker TEXT, heartbeat_at {float},
  attempts INTEGER NOT NULL DEFAULT 0, started_at {float}, finished_at {float},
  PRIMARY KEY(nightly, host_class, shard))""",
        """CREATE TABLE fleet_events(
  id {id}, nightly TEXT NOT NULL, host_class TEXT NOT NULL, shard TEXT, worker TEXT, worker_class TEXT,
  kind TEXT NOT NULL, detail TEXT NOT NULL, at {float} NOT NULL)""",
    )),
)

SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(db: Database) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")
    row = db.one("SELECT version FROM schema_version")
    return int(row[0]) if row else 0


def migrate(db: Database) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it was at."""
    with db.transaction():
        if db.dialect == "postgresql":  # two workers starting at once: one migrates, the other waits
            db.execute("SELECT pg_advisory_xact_lock(7202611)")
        was = current_version(db)
        if was > SCHEMA_VERSION:
            raise DatabaseError(f"{db.where}: history schema version {was} is newer than this rig's "
                                f"({SCHEMA_VERSION})", hint="upgrade the rig on this machine")
        for version, _what, steps in MIGRATIONS:
            if version <= was:
                continue
            for step in steps:
                db.execute(db.ddl(step))
        if was == 0:
            db.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
        elif was < SCHEMA_VERSION:
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    return was
