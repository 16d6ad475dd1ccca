"""Fleet pieces without servers: host classes, queue routing, nightly plans, schema migrations, KCIDB mapping."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rig.errors import RigError
from rig.fleet.hostclass import PORTABLE_QUEUE, check_name, is_portable, queue_for, this_host
from rig.fleet.runner import CaseResult
from rig.fleet.submit import plan_nightly
from rig.history.db import History
from rig.history.engine import parse_location
from rig.history.schema import SCHEMA_VERSION
from rig.report.kcidb import case_from_result, kcidb_document, status_of
from rig.results import Case, IssueRef

pytestmark = pytest.mark.fleet

# /proc/cpuinfo of an AMD EPYC 7B13 (Zen3, family 25 model 1 stepping 1), as the kernel prints it
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 1
microcode\t: 0xa0011d1
"""


def test_host_class_from_cpuinfo(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text(CPUINFO)
    hc = this_host("7.2.22", p)
    assert (hc.vendor, hc.family, hc.model, hc.stepping, hc.microcode) == ("AuthenticAMD", 25, 1, 1, "0xa0011d1")
    assert hc.name.startswith("amd-f25m1s1-k") and "-q7.2.22-" in hc.name
    p.write_text(CPUINFO.replace("0xa0011d1", "0xa0011d5"))  # a microcode update makes another class
    other = this_host("7.2.22", p)
    assert other.name != hc.name and other.name.rsplit("-", 1)[0] == hc.name.rsplit("-", 1)[0]
    assert queue_for(hc.name) == "rig.class." + hc.name


def test_class_names_and_portable_queue():
    assert is_portable("emulated:EPYC-Milan@6.16.12") and queue_for("emulated:EPYC-Milan@6.16.12") == PORTABLE_QUEUE
    assert not is_portable("A")
    with pytest.raises(RigError, match="not a host class name"):
        check_name("a b")
    with pytest.raises(RigError, match="not a host class name"):
        check_name("")


def test_plan_sends_emulated_cases_to_their_own_class(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text("""[matrix]
name = "mixed"
[[group]]
name = "native"
models = ["qemu64", "EPYC-Rome"]
machines = ["microvm"]
accels = ["tcg"]
[[group]]
name = "emu"
models = ["EPYC-Rome"]
machines = ["microvm"]
accels = ["kvm"]
hosts = ["emulated:EPYC-Rome@6.12"]
""")
    name, plan = plan_nightly(m, ["A", "B"], 2)
    assert name == "mixed" and set(plan) == {"A", "B", "emulated:EPYC-Rome@6.12"}
    ids = {cls: sorted(i for ids in shards.values() for i in ids) for cls, shards in plan.items()}
    assert len(ids["A"]) == len(ids["B"]) == 2 and ids["A"] == ids["B"]
    assert len(ids["emulated:EPYC-Rome@6.12"]) == 1  # once, not once per class
    with pytest.raises(RigError, match="no --classes given"):
        plan_nightly(m, [], 2)


def test_locations():
    assert parse_location("postgresql://u@/db?host=/tmp/x").dialect == "postgresql"
    assert parse_location("sqlite:///tmp/h.sqlite").path.as_posix() == "/tmp/h.sqlite"
    assert str(parse_location("postgresql://u:secret@h/db")) == "postgresql://u:***@h/db"
    with pytest.raises(RigError, match="mysql://: not a database"):
        parse_location("mysql://h/db")


def test_old_history_file_is_migrated_and_a_newer_one_refused(tmp_path):
    # a history file as rig wrote it before schema versions (tables of version 1, no schema_version)
    p = tmp_path / "old.sqlite"
    c = sqlite3.connect(p)
    c.executescript("""CREATE TABLE runs(id INTEGER PRIMARY KEY, run_dir TEXT UNIQUE NOT NULL, matrix TEXT NOT NULL,
      host_key TEXT NOT NULL, fingerprint TEXT NOT NULL, host_json TEXT NOT NULL, started_at TEXT,
      recorded_at TEXT NOT NULL, cases INTEGER NOT NULL, failed INTEGER NOT NULL);
      CREATE TABLE results(run_id INTEGER NOT NULL, case_id TEXT NOT NULL, outcome TEXT NOT NULL, verdict TEXT NOT NULL,
      words TEXT NOT NULL, PRIMARY KEY(run_id, case_id));
      CREATE TABLE findings(run_id INTEGER NOT NULL, case_id TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL,
      cls TEXT NOT NULL, layer TEXT NOT NULL, issue TEXT);""")
    host = {"hostname": "h", "cpu_model": "c", "microcode": "m", "kernel": "k", "qemu": "q"}
    c.execute("INSERT INTO runs VALUES (1, '/r1', 'smoke', 'hk', 'fp', ?, NULL, 'now', 1, 0)", (json.dumps(host),))
    c.commit()
    c.close()
    with History(p) as h:
        assert [r.run_dir for r in h.runs()] == ["/r1"] and h.runs()[0].nightly is None
    c = sqlite3.connect(p)
    assert c.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    c.execute("UPDATE schema_version SET version = 999")
    c.commit()
    c.close()
    with pytest.raises(RigError, match="schema version 999 is newer"):
        History(p)


def _result(outcome: str, verdict: str, issue: IssueRef | None = None) -> CaseResult:
    return CaseResult(Case("native", "system", "tcg", "microvm", "EPYC-Rome", "no-sse4.2", ("sse4.2=off",)),
                      outcome, verdict=verdict, duration_s=0.25, finished_at="2026-12-04T17:00:00Z",
                      outcome_issue=issue, unexpected=["timeout: no answer"] if verdict == "fail" else [])


def test_kcidb_statuses_paths_and_issues_validate():
    import kcidb_io

    assert [status_of(v, o) for v, o in [("pass", "ok"), ("expected", "ok"), ("fail", "ok"), ("error", "rig-error"),
                                         ("missing", "missing"), ("pass", "simulated")]] == \
        ["PASS", "PASS", "FAIL", "ERROR", "MISS", "DONE"]
    issue = IssueRef("qemu-hang-x", "QEMU hangs on X", "https://example.org/bug/1")
    cases = [case_from_result(_result("ok", "pass"), host_class="A", artifacts="node1:/var/rig/cases/x"),
             case_from_result(_result("timeout", "expected", issue), host_class="A"),
             case_from_result(_result("simulated", "pass"), host_class="emulated:EPYC-Rome@6.12")]
    doc = kcidb_document(cases, run="smoke-1", matrix="smoke", started_at="2026-12-04T16:00:00Z")
    kcidb_io.schema.V5_3.validate(doc)
    t = doc["tests"]
    assert t[0]["path"] == "kvm-cpuid-rig.smoke.EPYC-Rome-no-sse4_2-microvm-tcg-" + cases[0].case_id.rsplit("-", 1)[1]
    assert t[0]["log_url"] == "file://node1/var/rig/cases/x/serial.log" and t[0]["duration"] == 0.25
    assert t[0]["start_time"] == "2026-12-04T16:59:59+00:00"
    assert [x["status"] for x in t] == ["PASS", "PASS", "DONE"]
    assert len(doc["builds"]) == 2  # one per host class
    assert [i["report_url"] for i in doc["issues"]] == ["https://example.org/bug/1"]
    assert [(x["test_id"], x["present"]) for x in doc["incidents"]] == [(t[1]["id"], True)]


def test_cli_errors_are_one_line_with_exit_2(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fleet_helpers import rig

    monkeypatch.delenv("RIG_FLEET_BROKER", raising=False)
    monkeypatch.delenv("RIG_FLEET_DB", raising=False)
    db = str(tmp_path / "h.sqlite")
    cases = [
        (["fleet", "submit", "matrices/smoke.toml", "--db", db, "--classes", "A"], "--broker is required"),
        (["fleet", "submit", "matrices/smoke.toml", "--broker", "redis://x", "--db", db, "--classes", "a b"],
         "not a host class name"),
        (["fleet", "submit", "nope.toml", "--broker", "redis://x", "--db", db], "nope.toml: no such matrix file"),
        (["fleet", "status", "nope", "--db", db], "no nightly 'nope'"),
        (["fleet", "results", "latest", "--db", "mysql://h/db"], "mysql://: not a database"),
        (["history", "--db", db, "--nightly", "latest"], "no fleet nightly 'latest'"),
    ]
    for args, message in cases:
        p = rig(*args, check=False)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
