"""Writing a run's reports into its run directory: report.json, junit.xml, report.html."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..results import CaseResult
from .html import html_report
from .junit import junit_xml
from .summary import summarise

REPORT_FORMAT = "rig-report/1"


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


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def json_report(results: list[CaseResult], *, matrix: str, info: dict) -> dict:
    s = summarise(results)
    return {
        "format": REPORT_FORMAT, "matrix": matrix, "run": info,
        "summary": {"total": s.total, "verdicts": dict(s.verdicts), "outcomes": dict(s.outcomes),
                    "classes": dict(s.classes), "duration_s": round(s.duration_s, 3)},
        "results": [r.to_json() for r in sorted(results, key=lambda r: r.id)],
    }


def write_reports(run: RunRecord, results: list[CaseResult] | None = None, *, out: Path | None = None) -> ReportPaths:
    results = run.results() if results is None else results
    info = run.read_info()
    matrix = info.get("matrix_name", "matrix")
    out = out or run.path
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out / "report.json", out / "junit.xml", out / "report.html")
    _atomic(paths.json, (json.dumps(json_report(results, matrix=matrix, info=info), indent=1) + "\n").encode())
    _atomic(paths.junit, junit_xml(results, matrix=matrix, run_dir=run.path))
    _atomic(paths.html, html_report(results, matrix=matrix, run_dir=str(run.path), info=info).encode())
    return paths
