"""The reports' use of the history: new failures against the previous run on the same host (HTML report) and
`rig history --html` (trends per host: verdicts and finding classes over time, bits changed between runs)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from rig.cpuid.table import Location
from rig.history.db import History
from rig.history.fingerprint import HostFingerprint
from rig.report.trends import write_trends
from rig.report.write import write_reports
from rig.results import DEFAULT_FAIL_ON, Case, CaseResult, Finding, judge
from rig.run.rundir import RunDir, RunInfo

REPO = Path(__file__).resolve().parents[2]
HOST = HostFingerprint("node1", "AMD EPYC 7B13", "0xa0011d1", "6.1.0-28-amd64", "7.2.22")
HOST_NEW_KERNEL = HostFingerprint("node1", "AMD EPYC 7B13", "0xa0011d1", "6.12.38-amd64", "7.2.22")
OTHER_HOST = HostFingerprint("node2", "Intel Xeon", "0x2b000620", "6.1.0-28-amd64", "7.2.22")
X = Case("native", "system", "kvm", "microvm", "EPYC-Milan")
Y = Case("native", "system", "kvm", "microvm", "EPYC-Rome")
Z = Case("native", "system", "kvm", "q35", "EPYC-Rome")


def ok(case: Case) -> CaseResult:
    return judge(CaseResult(case, "ok", words={"0x7.0.ebx": ["00000020", "00000020", "00000020"]}), DEFAULT_FAIL_ON)


def gap(case: Case) -> CaseResult:
    # 0x7.0.EBX[5] is AVX2 (Intel SDM vol. 2A, CPUID leaf 7): predicted on, QEMU and the guest off: model-gap
    f = Finding(Location(7, 0, "ebx", 5), "avx2", "model-gap", "model-gap", "guest", 1, 0, {"long64": 0})
    return judge(CaseResult(case, "ok", findings=[f], words={"0x7.0.ebx": ["00000020", "00000000", "00000000"]}),
                 DEFAULT_FAIL_ON)


def make_run(path: Path, host: HostFingerprint, results: list[CaseResult]) -> RunDir:
    rd = RunDir.create(path, "nightly")
    rd.write_info(RunInfo(matrix="nightly.toml", matrix_name="nightly", started_at="2026-12-02T00:00:00Z",
                          argv=["rig"], host=host.to_json(), host_fingerprint=host.fingerprint))
    for r in results:
        rd.append(r)
    return rd


def record(db: Path, rd: RunDir, host: HostFingerprint) -> int:
    with History(db) as h:
        return h.record(run_dir=rd.path, matrix="nightly", host=host, started_at="x", results=rd.results())


def page_cases(html: str) -> dict[str, dict]:
    d = json.loads(re.search(r'<script type="application/json" id="rig-data">(.*?)</script>', html, re.S).group(1))
    return {c[0]: dict(zip(d["fields"], c, strict=True)) for c in d["cases"]}


def test_new_failures_marked_against_the_previous_run_on_this_host(tmp_path):
    db = tmp_path / "h.sqlite"
    r1 = make_run(tmp_path / "r1", HOST, [ok(X), ok(Y)])
    write_reports(r1, history=db)
    first = r1.path.joinpath("report.html").read_text()
    assert "No previous run of this matrix on this host" in first  # no database yet: nothing marked
    assert not db.exists()  # and reading did not create one
    record(db, r1, HOST)
    # another host's run in between is not "the previous run"
    record(db, make_run(tmp_path / "rb", OTHER_HOST, [gap(X), gap(Y)]), OTHER_HOST)
    r2 = make_run(tmp_path / "r2", HOST_NEW_KERNEL, [gap(X), ok(Y), gap(Z)])
    # as `rig run` does: reports first (the run is not recorded yet), then the record
    write_reports(r2, history=db)
    cases = page_cases(r2.path.joinpath("report.html").read_text())
    assert (cases[X.id]["new"], cases[Y.id]["new"], cases[Z.id]["new"]) == (1, 0, 2)  # 2: a new case, failing
    record(db, r2, HOST_NEW_KERNEL)
    write_reports(r2, history=db)  # `rig report` later: the previous run is the one recorded before it
    html = r2.path.joinpath("report.html").read_text()
    assert "previous run of this matrix on this host: run 1" in html
    assert re.search(r"<b>2</b> new failures", html)
    assert page_cases(html)[X.id]["new"] == 1
    # the previous run's directory is gone: said so, nothing marked
    (tmp_path / "r1" / "results.jsonl").unlink()
    write_reports(r2, history=db)
    html = r2.path.joinpath("report.html").read_text()
    assert "is gone: new failures are not marked" in html
    assert all(c["new"] == 0 for c in page_cases(html).values())


def test_trends_page(tmp_path):
    db = tmp_path / "h.sqlite"
    r1 = make_run(tmp_path / "r1", HOST, [ok(X), ok(Y)])
    write_reports(r1, history=db)
    record(db, r1, HOST)
    r2 = make_run(tmp_path / "r2", HOST_NEW_KERNEL, [gap(X), ok(Y)])
    write_reports(r2, history=db)
    record(db, r2, HOST_NEW_KERNEL)
    rb = make_run(tmp_path / "rb", OTHER_HOST, [ok(X)])
    write_reports(rb, history=db)
    record(db, rb, OTHER_HOST)
    out = tmp_path / "trends.html"
    series = write_trends(out, db=db)
    assert len(series) == 2
    page = out.read_text()
    sections = re.findall(r'<section class="host"[^>]*data-host="(\w+)"', page)
    assert sorted(sections) == sorted([HOST.host_key, OTHER_HOST.host_key])
    # the verdict chart: run 1 two passes, run 2 one pass and one fail (bar heights proportional to counts)
    bars = {(int(r), v): float(h) for r, v, h in
            re.findall(r'<rect class="bar" data-run="(\d+)" data-verdict="([\w-]+)"[^>]*height="([\d.]+)"', page)}
    assert set(bars) == {(1, "pass"), (2, "pass"), (2, "fail"), (3, "pass")}
    assert abs(bars[(1, "pass")] - 2 * bars[(2, "fail")]) < 0.2 and bars[(2, "pass")] == bars[(2, "fail")]
    # the finding-class chart: model-gap 0 then 1
    pts = re.findall(r'<circle class="point" data-class="model-gap" data-run="(\d+)" cx="[\d.]+" cy="([\d.]+)"', page)
    assert [r for r, _ in pts] == ["1", "2"] and float(pts[1][1]) < float(pts[0][1])
    # between the runs: the host's kernel changed, X's configured and observed AVX2 went 1 -> 0
    step = re.search(r'<div class="step" data-old="1" data-new="2">(.*?)</div>', page, re.S).group(1)
    assert "kernel 6.1.0-28-amd64 -&gt; 6.12.38-amd64" in step and "1 new findings" in step
    assert f"{X.id}: configured avx2 0x7.0.EBX[5] 1→0" in step and f"{X.id}: observed avx2 0x7.0.EBX[5] 1→0" in step
    assert r2.path.joinpath("report.html").as_uri() in page


def test_history_html_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    db = tmp_path / "h.sqlite"

    def rig(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rig.cli", "history", "--db", str(db), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    p = rig("--html", str(tmp_path / "t.html"))
    assert p.returncode == 2 and "no runs recorded" in p.stderr and "rig run MATRIX" in p.stderr
    r1 = make_run(tmp_path / "r1", HOST, [ok(X)])
    write_reports(r1, history=db)
    record(db, r1, HOST)
    p = rig("--html", str(tmp_path / "t.html"))
    assert p.returncode == 0, p.stderr
    assert "only one run so far" in (tmp_path / "t.html").read_text()
    p = rig("--html", "/dev/null")  # a device stays a device
    assert p.returncode == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    p = rig("--html", str(tmp_path / "t2.html"), "--host", "nosuchhost")
    assert p.returncode == 2 and "for host nosuchhost" in p.stderr
