"""The fleet store on SQLite and PostgreSQL: shard leases and exactly-once results under concurrency."""

from __future__ import annotations

import threading

import pytest

from rig.fleet.runner import CaseResult
from rig.fleet.store import LEASE_STALE_S, FleetStore, Nightly
from rig.results import Case

pytestmark = pytest.mark.fleet
CASES = [Case("native", "system", "tcg", "microvm", m) for m in ("qemu64", "EPYC-Rome", "Skylake-Server")]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    return str(tmp_path / "h.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def nightly(store: FleetStore) -> None:
    store.create_nightly(Nightly("n", "smoke", "matrices/smoke.toml", "x", 1, 1000.0, 2000.0, None),
                         {"A": {"1/1": [c.id for c in CASES]}})


def test_lease_busy_while_heartbeating_taken_over_when_stale(db):
    with FleetStore(db) as s:
        nightly(s)
        assert s.claim_shard("n", "A", "1/1", "w1", now=100.0) == "claimed"
        assert s.claim_shard("n", "A", "1/1", "w2", now=100.0 + LEASE_STALE_S - 1) == "busy"  # redelivered early
        assert s.claim_shard("n", "A", "1/1", "w1", now=101.0) == "claimed"  # its own redelivery
        assert s.claim_shard("n", "A", "1/1", "w2", now=101.0 + LEASE_STALE_S + 1) == "claimed"  # w1 died
        assert [e["kind"] for e in s.events("n")] == ["takeover"]
        s.release_shard("n", "A", "1/1", "w2", "done")
        assert s.claim_shard("n", "A", "1/1", "w3") == "done"
        assert s.shards("n") == [("A", "1/1", 3, "done", "w2", 3)]


def test_exactly_once_under_concurrent_stores_and_missing_at_close(db):
    with FleetStore(db) as s:
        nightly(s)
    wins: list[bool] = []

    def store(worker: str) -> None:
        with FleetStore(db) as s:
            for c in CASES[:2]:
                wins.append(s.store_result("n", "A", CaseResult(c, "ok"), worker=worker, worker_class="A",
                                           artifacts=f"h:/{worker}"))

    threads = [threading.Thread(target=store, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 6 + [True] * 2
    with FleetStore(db) as s:
        assert s.close("n", now=3000.0) == 1  # the third case never ran
        rows = {r["case_id"]: r["verdict"] for r in s.results("n")}
        assert rows == {CASES[0].id: "pass", CASES[1].id: "pass", CASES[2].id: "missing"}
        assert s.close("n") == 0  # idempotent
        # a result arriving after the close stays missing, and says so
        assert not s.store_result("n", "A", CaseResult(CASES[2], "ok"), worker="w9", worker_class="A", artifacts="")
        assert [e["kind"] for e in s.events("n")] == ["late"]
        assert s.progress("n")["A"].verdicts == {"pass": 2, "missing": 1}
