"""Fleet end to end: real redis-server, real PostgreSQL, real workers running real QEMU cases.

Two workers of different classes take `matrices/smoke.toml`; the class-A worker is
SIGKILLed mid-shard and a replacement started; afterwards every (class, case) is stored
exactly once, by a worker of that class, none missing, and the replacement ran only the
cases not stored before the kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_helpers import REPO, rig, wait_until  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]


def smoke_ids() -> set[str]:
    out = rig("run", "--list", "matrices/smoke.toml").stdout
    return {line.split("\t")[0] for line in out.splitlines() if line.strip()}


def stored(db: str) -> list[tuple[str, str, str, str, str]]:
    with psycopg.connect(db) as c:
        if c.execute("SELECT to_regclass('results')").fetchone()[0] is None:
            return []  # the schema is created by the first rig to open the database
        return c.execute("SELECT r.host_class, s.case_id, s.verdict, s.worker, s.worker_class FROM results s "
                         "JOIN runs r ON r.id = s.run_id WHERE r.nightly IS NOT NULL").fetchall()


def ran_in(workdir: Path) -> set[str]:
    ids = set()
    for f in workdir.rglob("results.jsonl"):
        ids |= {json.loads(line)["id"] for line in f.read_text().splitlines() if line.strip()}
    return ids


def validate_kcidb(path: Path) -> dict:
    import kcidb_io

    doc = json.loads(path.read_text())
    kcidb_io.schema.V5_3.validate(doc)
    return doc


def test_two_classes_worker_killed_mid_shard(redis_url, pg_url, workers, tmp_path):
    expected = smoke_ids()
    assert len(expected) == 24  # 4 models x 3 variants x 2 machines (matrices/smoke.toml)
    a1 = workers(redis_url, pg_url, "A", "A1", tmp_path / "a1")
    workers(redis_url, pg_url, "B", "B1", tmp_path / "b1")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    submit = subprocess.Popen([sys.executable, "-m", "rig.cli", "fleet", "submit", "matrices/smoke.toml", "--broker",
                               redis_url, "--db", pg_url, "--classes", "A,B", "--shards", "2", "--wait",
                               "--deadline", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=REPO)
    # kill A1 while its shard is half done: some of class A's cases stored, some not
    def mid_shard():
        a = [r for r in stored(pg_url) if r[0] == "A"]
        return a if 2 <= len(a) <= 18 else None
    wait_until(mid_shard, 240, "class A to be mid-shard", every=0.05)
    a1.kill()
    before = {r[1] for r in stored(pg_url) if r[0] == "A"}
    assert 2 <= len(before) < 24, f"the kill was not mid-shard ({len(before)} of 24 stored)"
    a2 = workers(redis_url, pg_url, "A", "A2", tmp_path / "a2")
    out, _ = submit.communicate(timeout=600)
    assert submit.returncode == 0, out
    rows = stored(pg_url)
    for cls in ("A", "B"):
        mine = [r for r in rows if r[0] == cls]
        ids = [r[1] for r in mine]
        assert len(ids) == len(set(ids)) == 24 and set(ids) == expected, f"class {cls}: {len(ids)} rows"
        assert all(r[2] != "missing" for r in mine)
        assert all(r[4] == cls for r in mine), "a case ran on another class's worker"
    assert {r[3] for r in rows if r[0] == "B"} == {"B1"}
    assert {r[3] for r in rows if r[0] == "A"} == {"A1", "A2"}
    # the replacement ran only what was not stored before the kill
    again = ran_in(a2.workdir)
    assert again and not (again & before), f"re-ran stored cases: {sorted(again & before)}"
    status = rig("fleet", "status", "latest", "--db", pg_url).stdout
    assert "A: 24/24 stored" in status and "B: 24/24 stored" in status
    assert "redelivered" in status or "takeover" in status

    nightly = json.loads(rig("fleet", "results", "latest", "--db", pg_url, "--json").stdout)
    assert {c: v["stored"] for c, v in nightly["classes"].items()} == {"A": 24, "B": 24}
    doc = validate_kcidb(Path(rig("fleet", "results", "latest", "--db", pg_url, "--kcidb",
                                  str(tmp_path / "k.json")).stderr.split()[1]))
    assert len(doc["tests"]) == 48 and {t["status"] for t in doc["tests"]} <= {"PASS", "FAIL", "ERROR", "DONE"}
    assert all(t["path"].startswith("kvm-cpuid-rig.smoke.") for t in doc["tests"])
    assert {t["environment"]["misc"]["host_class"] for t in doc["tests"]} == {"A", "B"}
    # a worker's own run directory through `rig report --kcidb`
    run_dir = next(p.parent for p in a2.workdir.rglob("run.json"))
    validate_kcidb(Path(rig("report", str(run_dir), "--out", str(tmp_path / "rep"), "--kcidb",
                            str(tmp_path / "run-k.json")).stdout.split("kcidb:")[1].split()[0]))
    page = rig("fleet", "report", "latest", "--db", pg_url, "-o", str(tmp_path / "fleet.html"))
    html = (tmp_path / "fleet.html").read_text()
    assert "EPYC-Rome" in html and ">A<" in html and ">B<" in html, page.stdout
    # rig history against PostgreSQL: the first nightly of each class
    hist = rig("history", "--db", pg_url, "--nightly", "latest").stdout
    assert "class A: the first nightly" in hist and "class B: the first nightly" in hist


def test_deadline_records_never_run_cases_as_missing(redis_url, pg_url, tmp_path):
    # class C has no worker: its cases never run and the deadline closes them as missing
    p = rig("fleet", "submit", "matrices/smoke.toml", "--broker", redis_url, "--db", pg_url, "--classes", "C",
            "--shards", "2", "--wait", "--deadline", "0.05", check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "C: 24/24 stored (24 missing)" in p.stdout
    res = json.loads(rig("fleet", "results", "latest", "--db", pg_url, "--json").stdout)
    assert len(res["results"]) == 24 and {r["verdict"] for r in res["results"]} == {"missing"}
    assert {r["host_class"] for r in res["results"]} == {"C"}
    rig("fleet", "results", "latest", "--db", pg_url, "--kcidb", str(tmp_path / "k.json"))
    doc = validate_kcidb(tmp_path / "k.json")
    assert len(doc["tests"]) == 24 and {t["status"] for t in doc["tests"]} == {"MISS"}
    assert {t["environment"]["misc"]["host_class"] for t in doc["tests"]} == {"C"}


def test_worker_refuses_a_shard_of_another_class(redis_url, pg_url, workers, tmp_path):
    from rig.fleet.app import ShardSpec, make_app
    from rig.fleet.store import FleetStore

    rig("fleet", "submit", "matrices/smoke.toml", "--broker", redis_url, "--db", pg_url, "--classes", "B",
        "--shards", "4", "--nightly-id", "refusal", "--deadline", "10")
    with FleetStore(pg_url) as store:
        shard = store.shards("refusal")[0]
        n = store.nightly("refusal")
    # a class-B shard put on class A's queue by mistake
    app = make_app(redis_url)
    spec = ShardSpec("refusal", "B", shard[1], n.matrix_path, n.matrix_sha256)
    app.send_task("rig.fleet.run_shard", args=[spec.to_json()], queue="rig.class.A")
    workers(redis_url, pg_url, "A", "A1", tmp_path / "a1")

    def refused():
        with FleetStore(pg_url) as s:
            return [e for e in s.events("refusal") if e["kind"] == "refused"]
    ev = wait_until(refused, 120, "the class-A worker to refuse the class-B shard", every=0.5)
    assert ev[0]["worker"] == "A1" and ev[0]["worker_class"] == "A"
    assert not [r for r in stored(pg_url) if r[3] == "A1"]
    assert not list((tmp_path / "a1").rglob("results.jsonl"))
    # it is not lost: a class-B worker runs it (from B's queue, where the refusal sent it, and the original)
    workers(redis_url, pg_url, "B", "B1", tmp_path / "b1")
    rig("fleet", "status", "refusal", "--db", pg_url)
    wait_until(lambda: len([r for r in stored(pg_url) if r[0] == "B"]) == 24, 400, "class B's 24 cases")
    assert {r[3] for r in stored(pg_url)} == {"B1"}


def test_sigterm_mid_shard_requeues_and_stops_the_worker(redis_url, pg_url, workers, tmp_path):
    from rig.fleet.store import FleetStore

    a1 = workers(redis_url, pg_url, "A", "A1", tmp_path / "a1")
    rig("fleet", "submit", "matrices/smoke.toml", "--broker", redis_url, "--db", pg_url, "--classes", "A",
        "--shards", "1", "--nightly-id", "term", "--deadline", "20")
    wait_until(lambda: 2 <= len(stored(pg_url)) <= 18, 240, "the shard to be half done", every=0.05)
    a1.kill(signal.SIGTERM)  # waits for the worker to exit: it must stop, not take the shard again
    assert a1.proc.returncode is not None
    before = {r[1] for r in stored(pg_url)}
    with FleetStore(pg_url) as s:
        assert [(sh[3], sh[4]) for sh in s.shards("term")] == [("queued", "A1")]
    assert 2 <= len(before) < 24
    a2 = workers(redis_url, pg_url, "A", "A2", tmp_path / "a2")
    wait_until(lambda: len(stored(pg_url)) == 24, 400, "the requeued shard to finish")
    assert not (ran_in(a2.workdir) & before) and ran_in(a2.workdir) | before == smoke_ids()


def test_cases_carrying_their_own_class_run_on_any_worker(redis_url, pg_url, workers, tmp_path):
    # simulate:PROFILE@KERNEL cases (like emulated:MODEL@KERNEL ones) do not depend on the worker's CPU: their
    # class is the host string and they go to the queue every worker consumes; here only a class-B worker runs
    profile = tmp_path / "profile.json"
    rig("host", "capture", "-o", str(profile))
    host = f"simulate:{profile}@6.12"
    m = tmp_path / "sim.toml"
    m.write_text(f'[matrix]\nname = "sim"\n[[group]]\nmodels = ["EPYC-Rome", "qemu64"]\nmachines = ["microvm"]\n'
                 f'accels = ["kvm"]\nhosts = ["{host}"]\n')
    workers(redis_url, pg_url, "B", "B1", tmp_path / "b1")
    p = rig("fleet", "submit", str(m), "--broker", redis_url, "--db", pg_url, "--shards", "2", "--wait",
            "--deadline", "10", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = stored(pg_url)
    assert len(rows) == 2 and {(r[0], r[3], r[4]) for r in rows} == {(host, "B1", "B")}
    rig("fleet", "results", "latest", "--db", pg_url, "--kcidb", str(tmp_path / "k.json"))
    doc = validate_kcidb(tmp_path / "k.json")
    assert [t["status"] for t in doc["tests"]] == ["DONE", "DONE"]  # prediction only: no guest ran
