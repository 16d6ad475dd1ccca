"""Writing a run's reports into its run directory: report.json, junit.xml, results.tap, report.html."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..outfile import output_directory, write_output
from ..results import CaseResult
from .history_access import previous_run
from .html import CHUNK_DIR, chunk_js, render_report
from .junit import junit_xml
from .summary import summarise
from .tap import tap_report

REPORT_FORMAT = "rig-report/1"
#: bytes of case details embedded in report.html; the rest load from report-details/ (the page stays < 1.5 MB)
INLINE_DETAILS = 600_000


class RunRecord(Protocol):
    """A finished (or interrupted) run: its directory, its results and its ``run.json`` (rig.run.rundir.RunDir)."""

    path: Path

    def results(self) -> list[CaseResult]: ...

    def read_info(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    junit: Path
    html: Path
    tap: Path | None = None


def json_report(results: list[CaseResult], *, matrix: str, info: dict) -> dict:
    s = summarise(results)
    return {
        "format": REPORT_FORMAT, "matrix": matrix, "run": info,
        "summary": {"total": s.total, "verdicts": dict(s.verdicts), "outcomes": dict(s.outcomes),
                    "classes": dict(s.classes), "duration_s": round(s.duration_s, 3)},
        "results": [r.to_json() for r in sorted(results, key=lambda r: r.id)],
    }


def _views_reader(run_path: Path):
    """A case's ``views.json`` (None when it is missing or unreadable: the grid then shows the compared words)."""
    def read(r: dict) -> dict | None:
        if not r.get("artifacts"):
            return None
        try:
            return json.loads((run_path / r["artifacts"] / "views.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
    return read


def _write_chunks(out: Path, chunks: list[dict]) -> None:
    """``report-details/N.js``; chunk files of an earlier report there are removed (only those: N.js)."""
    d = out / CHUNK_DIR
    if d.is_dir():
        for f in d.iterdir():
            if f.suffix == ".js" and f.stem.isdigit() and f.is_file():
                f.unlink()
    if not chunks:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
        return
    d.mkdir(exist_ok=True)
    for n, chunk in enumerate(chunks):
        write_output(d / f"{n}.js", chunk_js(n, chunk).encode())


def write_reports(run: RunRecord, results: list[CaseResult] | None = None, *, out: Path | None = None,
                  history: Path | None = None, inline_details: int = INLINE_DETAILS) -> ReportPaths:
    """Every report of ``run``; ``history``: the database whose previous run of this matrix on this host marks
    new failures in the HTML report (default: the default database, if there is one)."""
    results = run.results() if results is None else results
    info = run.read_info()
    matrix = info.get("matrix_name", "matrix")
    out = output_directory(out or run.path)
    paths = ReportPaths(out / "report.json", out / "junit.xml", out / "report.html", out / "results.tap")
    rows = [r.to_json() for r in results]
    write_output(paths.json, (json.dumps(json_report(results, matrix=matrix, info=info), indent=1) + "\n").encode())
    write_output(paths.junit, junit_xml(results, matrix=matrix, run_dir=run.path))
    write_output(paths.tap, tap_report(rows, matrix=matrix, run_dir=run.path).encode())
    prev = previous_run(run.path, info, history)
    page, chunks = render_report(rows, matrix=matrix, run_dir=str(run.path), info=info, views=_views_reader(run.path),
                                 previous=prev, inline_budget=inline_details)
    _write_chunks(out, chunks)
    write_output(paths.html, page.encode())
    return paths
