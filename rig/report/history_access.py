"""What the reports read from the history database: the one place that does.

Only :mod:`rig.history.db`'s public functions are used (``History``, ``runs``,
``previous``, ``diff_runs``, ``default_history_path``).  Per-case verdicts and
per-run counts come from the run directories the history names (their
``results.jsonl`` / ``report.json``), so a run whose directory was removed is
still listed, with what the database itself holds.

Reading never creates a database: without one there is simply no history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..history.db import History, default_history_path
from ..history.fingerprint import HostFingerprint


def database_path(db: Path | None) -> Path:
    return db or default_history_path()


@dataclass(frozen=True)
class PreviousRun:
    """The previous run of the same matrix on the same host (by host key)."""

    id: int
    run_dir: str
    recorded_at: str
    #: case id -> verdict; None when the run directory is gone
    verdicts: dict[str, str] | None

    @property
    def label(self) -> str:
        return f"run {self.id} ({self.recorded_at})"


def _read_verdicts(run_dir: str) -> dict[str, str] | None:
    path = Path(run_dir) / "results.jsonl"
    try:
        text = path.read_text()
    except OSError:
        return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            out[rec["id"]] = rec["verdict"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line of an interrupted run
    return out


def previous_run(run_path: Path, info: dict[str, Any], db_path: Path | None = None) -> PreviousRun | None:
    """The run before ``run_path`` of its matrix on its host, from the history database (None: no database,
    no host fingerprint in ``run.json``, or no earlier run)."""
    host = info.get("host")
    db_path = db_path or default_history_path()
    if not host or not db_path.is_file():
        return None
    key = HostFingerprint.from_json(host).host_key
    me = str(run_path)
    with History(db_path) as db:
        runs = [r for r in db.runs(host=key, matrix=info.get("matrix_name")) if r.host_key == key]
        mine = next((r for r in runs if r.run_dir == me), None)
        prev = db.previous(mine) if mine is not None else next((r for r in reversed(runs) if r.run_dir != me), None)
    if prev is None:
        return None
    return PreviousRun(prev.id, prev.run_dir, prev.recorded_at, _read_verdicts(prev.run_dir))


# ------------------------------------------------------------------ trends


@dataclass
class RunPoint:
    id: int
    run_dir: str
    recorded_at: str
    host: dict[str, Any]
    cases: int
    failed: int
    #: from the run's report.json (None: the run directory or its report is gone)
    verdicts: dict[str, int] | None = None
    classes: dict[str, int] | None = None


@dataclass
class BitFlip:
    case_id: str
    location: str
    name: str
    view: str
    old: int
    new: int


@dataclass
class Step:
    """What changed from one run to the next on a host."""

    old_id: int
    new_id: int
    host_changes: list[str]
    bits: list[BitFlip]
    new_findings: int
    fixed_findings: int
    outcome_changes: int


@dataclass
class HostSeries:
    host_key: str
    matrix: str
    runs: list[RunPoint] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


def _report_counts(run_dir: str) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    try:
        s = json.loads((Path(run_dir) / "report.json").read_text())["summary"]
        return dict(s["verdicts"]), dict(s["classes"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None, None


def host_series(db_path: Path | None = None, *, host: str | None = None, matrix: str | None = None) -> list[HostSeries]:
    """Every (host, matrix) of the database with its runs, oldest first, and the steps between them."""
    with History(db_path) as db:
        rows = db.runs(host=host, matrix=matrix)
        series: dict[tuple[str, str], HostSeries] = {}
        for r in rows:
            s = series.setdefault((r.host_key, r.matrix), HostSeries(r.host_key, r.matrix))
            v, c = _report_counts(r.run_dir)
            s.runs.append(RunPoint(r.id, r.run_dir, r.recorded_at, r.host.to_json(), r.cases, r.failed, v, c))
        for s in series.values():
            for old, new in zip(s.runs, s.runs[1:], strict=False):
                d = db.diff_runs(db.run(old.id), db.run(new.id))
                s.steps.append(Step(old.id, new.id, list(d.host_changes),
                                    [BitFlip(b.case_id, b.location, b.name, b.view, b.old, b.new) for b in d.bit_changes],
                                    len(d.new_findings), len(d.fixed_findings), len(d.outcome_changes)))
    return sorted(series.values(), key=lambda s: (s.host_key, s.matrix))
