"""KCIDB v5 JSON: the rig's results for kernel CI dashboards.

One KCIDB *test* per case, path ``kvm-cpuid-rig.<matrix>.<case>`` (characters a KCIDB
path node cannot hold, such as the ``.`` of ``sse4.2``, become ``_``; the exact case id
is in ``misc.case_id``).  Status from the verdict: ``pass`` PASS, ``expected`` PASS (only
known/expected differences), ``fail`` FAIL, ``error`` (the rig failed) ERROR,
``missing`` (never ran by a fleet nightly's deadline) MISS, and a prediction-only case
(outcome ``simulated``: no guest ran) DONE.  The host class is the test's
environment; duration, start time, the log (``serial.log``) and the other artifacts
are given as ``file://HOST/PATH`` URLs (artifacts stay on the host that ran the case).

A run (``rig report RUN_DIR --kcidb``) or a fleet nightly is one KCIDB checkout,
with one build per host class (KCIDB tests hang off builds).  Known issues met by
a case (a finding's or an outcome's) are KCIDB issues, with one incident per case.
Written against the schema of ``kcidb-io`` (``kcidb_io.schema.V5_3``); tests validate it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORIGIN = "kvm_cpuid_rig"
PATH_ROOT = "kvm-cpuid-rig"
SCHEMA_VERSION = {"major": 5, "minor": 3}
_NODE = re.compile(r"[^A-Za-z0-9_-]+")
_LOG = "serial.log"


@dataclass(frozen=True)
class KcidbIssue:
    id: str
    title: str
    link: str | None


@dataclass
class KcidbCase:
    """One case as KCIDB sees it (built from a ``CaseResult`` or a fleet row)."""

    case_id: str
    verdict: str                  # pass | expected | fail | error | missing
    outcome: str
    host_class: str
    duration_s: float | None = None
    finished_at: str | None = None  # "YYYY-MM-DDTHH:MM:SSZ"
    artifacts: str | None = None    # "HOST:/abs/path" of the case directory
    files: list[str] = field(default_factory=list)  # names in the case directory (when known)
    issues: list[KcidbIssue] = field(default_factory=list)
    comment: str = ""
    misc: dict[str, Any] = field(default_factory=dict)


def status_of(verdict: str, outcome: str) -> str:
    if verdict == "missing":
        return "MISS"
    if verdict == "error":
        return "ERROR"
    if verdict == "fail":
        return "FAIL"
    if outcome == "simulated":
        return "DONE"
    return "PASS"


def node(text: str) -> str:
    return _NODE.sub("_", text).strip("_") or "_"


def _id(*parts: str) -> str:
    return ORIGIN + ":" + ":".join(parts)


def _file_url(location: str, name: str | None = None) -> str:
    host, _, path = location.partition(":")
    if not path.startswith("/"):
        host, path = "", location
    full = path.rstrip("/") + ("/" + name if name else "")
    from urllib.parse import quote

    return f"file://{host}{quote(full)}"


def case_from_result(r: Any, *, host_class: str, artifacts: str | None = None) -> KcidbCase:
    """From a ``CaseResult``; ``artifacts``: where its case directory is (``HOST:/path``)."""
    issues = {f.issue.id: KcidbIssue(f.issue.id, f.issue.title, f.issue.link) for f in r.findings if f.issue}
    if r.outcome_issue:
        issues[r.outcome_issue.id] = KcidbIssue(r.outcome_issue.id, r.outcome_issue.title, r.outcome_issue.link)
    files: list[str] = []
    if artifacts:
        host, _, path = artifacts.partition(":")
        if host == socket.gethostname() and Path(path).is_dir():
            files = sorted(p.name for p in Path(path).iterdir() if p.is_file())
    comment = "; ".join(r.unexpected) if r.unexpected else (r.message or r.outcome)
    return KcidbCase(r.id, r.verdict, r.outcome, host_class, r.duration_s, r.finished_at or None, artifacts, files,
                     list(issues.values()), comment[:2000],
                     {"case_id": r.id, "outcome": r.outcome, "verdict": r.verdict, "cpu": r.case.cpu_arg,
                      "machine": r.case.machine, "accel": r.case.accel, "qemu_version": r.qemu_version or "",
                      "findings": [f"{f.cls}: {f.name} {f.location}" for f in r.findings][:200]})


def _start(finished_at: str | None, duration: float | None) -> str | None:
    if not finished_at:
        return None
    try:
        t = time.mktime(time.strptime(finished_at[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t - (duration or 0)))


def kcidb_document(cases: Iterable[KcidbCase], *, run: str, matrix: str, started_at: str | None = None,
                   classes: dict[str, str] | None = None) -> dict[str, Any]:
    """The KCIDB v5 document: ``run`` names the checkout (a nightly id or a run directory's name);
    ``classes``: host class -> a description for its build's comment."""
    cases = list(cases)
    checkout_id = _id(node(run))
    checkout: dict[str, Any] = {"id": checkout_id, "origin": ORIGIN, "tree_name": PATH_ROOT,
                                "comment": f"kvm-cpuid-rig matrix {matrix}, {run}", "valid": True}
    st = _start(started_at, 0)
    if st:
        checkout["start_time"] = st
    builds, tests, issues, incidents = {}, [], {}, []
    for c in cases:
        build_id = _id(node(run), node(c.host_class))
        if build_id not in builds:
            builds[build_id] = {"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN, "architecture": "x86_64",
                                "comment": (classes or {}).get(c.host_class, f"host class {c.host_class}"),
                                "status": "PASS", "misc": {"host_class": c.host_class}}
        test_id = _id(node(run), node(c.host_class), node(c.case_id))
        t: dict[str, Any] = {
            "id": test_id, "build_id": build_id, "origin": ORIGIN,
            "path": f"{PATH_ROOT}.{node(matrix)}.{node(c.case_id)}", "status": status_of(c.verdict, c.outcome),
            "environment": {"comment": f"host class {c.host_class}", "misc": {"host_class": c.host_class}},
            "misc": {**c.misc, "case_id": c.case_id, "verdict": c.verdict, "outcome": c.outcome},
        }
        if c.comment:
            t["comment"] = c.comment
        if c.duration_s is not None and c.verdict != "missing":
            t["duration"] = round(float(c.duration_s), 4)
        st = _start(c.finished_at, c.duration_s) if c.verdict != "missing" else None
        if st:
            t["start_time"] = st
        if c.artifacts:
            t["misc"]["artifacts"] = c.artifacts
            names = c.files or [_LOG]
            if _LOG in names:
                t["log_url"] = _file_url(c.artifacts, _LOG)
            others = [n for n in names if n != _LOG]
            if others:
                t["output_files"] = [{"name": n, "url": _file_url(c.artifacts, n)} for n in others]
        tests.append(t)
        for i in c.issues:
            iid = _id("issue", node(i.id))
            if iid not in issues:
                issue: dict[str, Any] = {"id": iid, "version": 1, "origin": ORIGIN, "report_subject": i.title,
                                         "comment": f"known issue {i.id}: {i.title}",
                                         "culprit": {"code": True, "tool": False, "harness": False},
                                         "misc": {"known_issue": i.id}}
                if i.link:
                    issue["report_url"] = i.link
                issues[iid] = issue
            incidents.append({"id": _id("incident", node(run), node(c.host_class), node(c.case_id), node(i.id)),
                              "origin": ORIGIN, "issue_id": iid, "issue_version": 1, "test_id": test_id,
                              "present": True})
    return {"version": dict(SCHEMA_VERSION), "checkouts": [checkout], "builds": list(builds.values()),
            "tests": tests, "issues": list(issues.values()), "incidents": incidents}


def write_kcidb(path: Path, doc: dict[str, Any]) -> None:
    """Write the document; a path that is not a regular file (``/dev/stdout``, a FIFO) is written into, never
    replaced, a regular file is replaced atomically."""
    data = json.dumps(doc, indent=1) + "\n"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "w") as f:
            f.write(data)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    tmp.replace(path)


def run_document(run_dir: Path, info: dict[str, Any], results: Iterable[Any]) -> dict[str, Any]:
    """A single-host run directory as KCIDB: its host (as recorded in ``run.json``) is the environment."""
    host = info.get("host") or {}
    hostname = host.get("hostname") or socket.gethostname()
    label = node(f"{hostname}-{host.get('fingerprint', 'unknown')}")
    desc = (f"{hostname}: {host.get('cpu_model', '?')}, microcode {host.get('microcode', '?')}, "
            f"kernel {host.get('kernel', '?')}, QEMU {host.get('qemu', '?')}")
    root = run_dir.resolve()
    cases = [case_from_result(r, host_class=label,
                              artifacts=f"{hostname}:{root / r.artifacts}" if r.artifacts else None) for r in results]
    return kcidb_document(sorted(cases, key=lambda c: c.case_id), run=root.name,
                          matrix=info.get("matrix_name", "matrix"), started_at=info.get("started_at"),
                          classes={label: desc})
