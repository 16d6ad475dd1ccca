"""The history database: every run's results, keyed by host (or host class, for the fleet).

One code path for SQLite (stdlib; the embedded default, ``<cache>/history.sqlite``)
and PostgreSQL (psycopg 3; the fleet's shared history): :mod:`rig.history.engine`
hides the two drivers, :mod:`rig.history.schema` holds the versioned schema and
its migrations.  Tables:

* ``runs``     -- one row per run directory, or per (nightly, host class) of a fleet
  nightly (``run_dir`` ``fleet:NIGHTLY:CLASS``, ``host_key`` = the class);
* ``results``  -- per run and case: outcome, verdict, compared words (JSON), and for
  the fleet duration, worker, artifact location and the whole result;
* ``findings`` -- per run, case and differing bit: class, layer, known issue.

Public API (used by ``rig run``, ``rig history`` and the fleet; keep it stable):

* ``History(where=None)`` -- ``where``: a :class:`~pathlib.Path`, a path string,
  ``sqlite:///PATH`` or ``postgresql://...``; ``None`` is the default SQLite file.
  ``.path`` is what to show the user (the file, or the URL without password);
  ``.db`` the :class:`~rig.history.engine.Database` (the fleet's store shares it).
* ``record(run_dir=, matrix=, host=, started_at=, results=) -> run id``;
* ``runs(host=None, matrix=None, nightly=None) -> [RunRow]`` (oldest first),
  ``run(id)``, ``previous(row)`` (the previous run of the same host key / class
  and matrix), ``nightly_runs(nightly)`` (one per class), ``latest_nightly()``;
* ``diff_runs(old, new) -> HistoryDiff``; :func:`format_diff`.

:func:`diff_runs` answers "what changed since the previous run on this host" (or
nightly of this class): bits whose configured or observed value changed, findings
that are new, findings that are gone (fixed), outcomes that changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cpuid.catalogue import catalogue
from ..cpuid.table import Location
from ..images.cache import cache_root
from ..results import CaseResult
from .engine import Database, DatabaseError, DbLocation, parse_location
from .fingerprint import HostFingerprint
from .schema import migrate

HistoryError = DatabaseError  # the name rig run and the tests know


def default_history_path() -> Path:
    return cache_root() / "history.sqlite"


@dataclass(frozen=True)
class RunRow:
    id: int
    run_dir: str
    matrix: str
    host_key: str
    fingerprint: str
    host: HostFingerprint
    started_at: str | None
    recorded_at: str
    cases: int
    failed: int
    nightly: str | None = None
    host_class: str | None = None


@dataclass
class BitChange:
    case_id: str
    location: str
    name: str
    view: str   # "configured" | "observed"
    old: int
    new: int


@dataclass
class HistoryDiff:
    old: RunRow
    new: RunRow
    host_changes: list[str] = field(default_factory=list)
    bit_changes: list[BitChange] = field(default_factory=list)
    new_findings: list[tuple[str, str, str, str]] = field(default_factory=list)    # case, location, name, class
    fixed_findings: list[tuple[str, str, str, str]] = field(default_factory=list)
    outcome_changes: list[tuple[str, str, str]] = field(default_factory=list)      # case, old, new
    cases_added: list[str] = field(default_factory=list)
    cases_removed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.bit_changes or self.new_findings or self.fixed_findings or self.outcome_changes)


#: one finding of one case, as ``finding_rows`` gives it
FINDINGS_INSERT = "INSERT INTO findings(run_id, case_id, key, name, cls, layer, issue) VALUES (?,?,?,?,?,?,?)"


def result_row(run_id: int, r: CaseResult) -> tuple:
    """The ``results`` columns every writer stores: run_id, case_id, outcome, verdict, words, duration_s,
    finished_at (enums as their strings: database drivers adapt Enum members by name)."""
    return (run_id, r.id, str(r.outcome), str(r.verdict), json.dumps(r.words, separators=(",", ":")), r.duration_s,
            r.finished_at)


def finding_rows(run_id: int, r: CaseResult) -> list[tuple]:
    """``findings`` rows of one case (for :data:`FINDINGS_INSERT`)."""
    return [(run_id, r.id, f.key, f.name, str(f.cls), str(f.layer), f.issue.id if f.issue else None)
            for f in r.findings]


class History:
    def __init__(self, where: Path | str | DbLocation | None = None) -> None:
        loc = where if isinstance(where, DbLocation) else parse_location(where or default_history_path())
        self.location = loc
        self.path: Path | str = loc.path if loc.path is not None else str(loc)
        self.db: Database = Database(loc)
        try:
            migrate(self.db)
        except DatabaseError as e:
            self.db.close()
            if loc.dialect == "sqlite" and "newer" not in str(e):
                raise HistoryError(f"{self.path}: not a usable history database: {e}",
                                   hint="move it away or pass another --history PATH") from None
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------
    def record(self, *, run_dir: Path, matrix: str, host: HostFingerprint, started_at: str | None,
               results: Sequence[CaseResult]) -> int:
        """Store a run (replacing an earlier record of the same run directory, e.g. after --resume)."""
        with self.db.transaction():
            self.db.execute("DELETE FROM runs WHERE run_dir = ?", (str(run_dir),))
            row = self.db.one(
                "INSERT INTO runs(run_dir, matrix, host_key, fingerprint, host_json, started_at, recorded_at, cases, failed)"
                " VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
                (str(run_dir), matrix, host.host_key, host.fingerprint, json.dumps(host.to_json()), started_at,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), len(results),
                 sum(1 for r in results if r.verdict in ("fail", "error"))),
            )
            run_id = int(row[0]) if row else 0
            self.db.executemany(
                "INSERT INTO results(run_id, case_id, outcome, verdict, words, duration_s, finished_at, artifacts)"
                " VALUES (?,?,?,?,?,?,?,?)",
                [(*result_row(run_id, r), r.artifacts) for r in results],
            )
            self.db.executemany(FINDINGS_INSERT, [row for r in results for row in finding_rows(run_id, r)])
        return run_id

    # -- reading -----------------------------------------------------------------------
    def _row(self, t: tuple) -> RunRow:
        return RunRow(t[0], t[1], t[2], t[3], t[4], HostFingerprint.from_json(json.loads(t[5])), t[6], t[7], t[8], t[9],
                      t[10], t[11])

    _COLS = "id, run_dir, matrix, host_key, fingerprint, host_json, started_at, recorded_at, cases, failed, nightly, host_class"

    def runs(self, host: str | None = None, matrix: str | None = None, nightly: str | None = None) -> list[RunRow]:
        """Runs, oldest first; ``host`` matches a host key (or host class) or fingerprint prefix."""
        q, args = f"SELECT {self._COLS} FROM runs WHERE 1=1", []
        if host:
            q += " AND (host_key LIKE ? OR fingerprint LIKE ?)"
            args += [host + "%", host + "%"]
        if matrix:
            q += " AND matrix = ?"
            args.append(matrix)
        if nightly:
            q += " AND nightly = ?"
            args.append(nightly)
        return [self._row(t) for t in self.db.all(q + " ORDER BY id", args)]

    def run(self, run_id: int) -> RunRow:
        t = self.db.one(f"SELECT {self._COLS} FROM runs WHERE id = ?", (run_id,))
        if t is None:
            raise HistoryError(f"{self.path}: no run with id {run_id}", hint="list runs with `rig history --list`")
        return self._row(t)

    def previous(self, run: RunRow) -> RunRow | None:
        t = self.db.one(f"SELECT {self._COLS} FROM runs WHERE host_key = ? AND matrix = ? AND id < ? "
                        "ORDER BY id DESC LIMIT 1", (run.host_key, run.matrix, run.id))
        return self._row(t) if t else None

    def nightly_runs(self, nightly: str) -> list[RunRow]:
        """The runs of a fleet nightly, one per host class."""
        return self.runs(nightly=nightly)

    def latest_nightly(self) -> str | None:
        t = self.db.one("SELECT nightly FROM runs WHERE nightly IS NOT NULL ORDER BY id DESC LIMIT 1")
        return t[0] if t else None

    def _results(self, run_id: int) -> dict[str, tuple[str, str, dict]]:
        return {c: (o, v, json.loads(w)) for c, o, v, w in
                self.db.all("SELECT case_id, outcome, verdict, words FROM results WHERE run_id = ?", (run_id,))}

    def _findings(self, run_id: int) -> dict[tuple[str, str], tuple[str, str]]:
        return {(c, k): (n, cls) for c, k, n, cls in
                self.db.all("SELECT case_id, key, name, cls FROM findings WHERE run_id = ?", (run_id,))}

    def diff_runs(self, old: RunRow, new: RunRow) -> HistoryDiff:
        d = HistoryDiff(old, new, host_changes=new.host.changes(old.host))
        ro, rn = self._results(old.id), self._results(new.id)
        d.cases_added = sorted(set(rn) - set(ro))
        d.cases_removed = sorted(set(ro) - set(rn))
        cat = catalogue()
        for cid in sorted(set(ro) & set(rn)):
            (oo, _ov, wo), (on, _nv, wn) = ro[cid], rn[cid]
            if oo != on:
                d.outcome_changes.append((cid, oo, on))
            for key in sorted(set(wo) & set(wn)):
                for idx, view in ((1, "configured"), (2, "observed")):
                    a, b = wo[key][idx], wn[key][idx]
                    if a is None or b is None or a == b:
                        continue
                    va, vb = int(a, 16), int(b, 16)
                    x = va ^ vb
                    leaf_s, sub_s, reg = key.split(".")
                    for bit in range(32):
                        if x >> bit & 1:
                            name = cat.name_of(int(leaf_s, 16), int(sub_s), reg, bit)
                            loc = str(Location(int(leaf_s, 16), int(sub_s), reg, bit))
                            d.bit_changes.append(BitChange(cid, loc, name, view,
                                                           va >> bit & 1, vb >> bit & 1))
        fo, fn = self._findings(old.id), self._findings(new.id)
        common = set(ro) & set(rn)
        d.new_findings = sorted((c, k, *fn[(c, k)]) for (c, k) in set(fn) - set(fo) if c in common)
        d.fixed_findings = sorted((c, k, *fo[(c, k)]) for (c, k) in set(fo) - set(fn) if c in common)
        return d


def format_diff(d: HistoryDiff) -> str:
    lines = [f"run {d.new.id} ({d.new.run_dir}) against run {d.old.id} ({d.old.run_dir}), host {d.new.host_key}"]
    lines.append("host changes: " + ("; ".join(d.host_changes) if d.host_changes else "none"))
    if d.empty and not (d.cases_added or d.cases_removed):
        lines.append("no changes")
        return "\n".join(lines)
    if d.bit_changes:
        lines.append(f"bits changed ({len(d.bit_changes)}):")
        lines += [f"  {b.case_id}: {b.view} {b.name} {b.location} {b.old} -> {b.new}" for b in d.bit_changes]
    if d.new_findings:
        lines.append(f"new findings ({len(d.new_findings)}):")
        lines += [f"  {c}: {cls} {n} {k}" for c, k, n, cls in d.new_findings]
    if d.fixed_findings:
        lines.append(f"fixed findings ({len(d.fixed_findings)}):")
        lines += [f"  {c}: {cls} {n} {k}" for c, k, n, cls in d.fixed_findings]
    if d.outcome_changes:
        lines.append(f"outcomes changed ({len(d.outcome_changes)}):")
        lines += [f"  {c}: {a} -> {b}" for c, a, b in d.outcome_changes]
    if d.cases_added:
        lines.append(f"cases added: {len(d.cases_added)}")
    if d.cases_removed:
        lines.append(f"cases removed: {len(d.cases_removed)}")
    return "\n".join(lines)
