"""`rig history --db URL` on SQLite and PostgreSQL alike: what changed since the previous nightly, per class.

The nightlies' rows are written through the fleet store (the same path workers use), with results
whose 0x80000021.ECX differ by the TSA bits between the two nightlies in class A only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_helpers import rig  # noqa: E402

from rig.cpuid.table import Location  # noqa: E402
from rig.fleet.runner import CaseResult  # noqa: E402
from rig.fleet.store import FleetStore, Nightly  # noqa: E402
from rig.results import (  # noqa: E402
    DEFAULT_FAIL_ON,
    Case,
    Finding,  # noqa: E402
    judge,  # noqa: E402
)

pytestmark = pytest.mark.fleet
CASE = Case("native", "system", "kvm", "microvm", "EPYC-Milan")


def result(ecx: str, tsa: bool) -> CaseResult:
    # 0x80000021.ECX[1] TSA_SQ_NO, [2] TSA_L1_NO (kernel cpufeatures.h)
    f = [Finding(Location(0x80000021, 0, "ecx", 1), "tsa-sq-no", "kvm-behaviour", "kvm-behaviour", "guest", None, 0,
                 {"long64": 1})] if tsa else []
    return judge(CaseResult(CASE, "ok", findings=f, words={"0x80000021.0.ecx": [None, "00000000", ecx]}), DEFAULT_FAIL_ON)


def two_nightlies(db: str) -> None:
    with FleetStore(db) as s:
        for i, (a, b) in enumerate([(("00000000", False), ("00000000", False)), (("00000006", True), ("00000000", False))]):
            nid = f"n{i}"
            s.create_nightly(Nightly(nid, "smoke", "/m.toml", "x", 1, 1000.0 + i, None, None),
                             {"A": {"1/1": [CASE.id]}, "B": {"1/1": [CASE.id]}})
            assert s.store_result(nid, "A", result(*a), worker="w", worker_class="A", artifacts="h:/x")
            assert s.store_result(nid, "B", result(*b), worker="w", worker_class="B", artifacts="h:/y")
            assert not s.store_result(nid, "B", result(*b), worker="w2", worker_class="B", artifacts="h:/z")  # once
            s.close(nid)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_history_what_changed_since_previous_nightly_per_class(backend, tmp_path, request):
    db = str(tmp_path / "h.sqlite") if backend == "sqlite" else request.getfixturevalue("pg_url")
    two_nightlies(db)
    out = rig("history", "--db", db, "--nightly", "n1").stdout
    a, b = out.split("class B")
    assert "class A, against nightly n0" in a and "observed" in a and "0x80000021.ECX[1] 0 -> 1" in a
    assert "0x80000021.ECX[2] 0 -> 1" in a and "new findings (1)" in a
    assert "no changes" in b
    # the class filter and the plain run listing work on the same database
    assert "class B" not in rig("history", "--db", db, "--nightly", "latest", "--host", "A").stdout
    assert rig("history", "--db", db, "--list").stdout.count("fleet:") == 4


def test_fleet_page_lists_regressions_first(tmp_path):
    db = str(tmp_path / "h.sqlite")
    two_nightlies(db)  # class A: pass in n0, fail (unexpected kvm-behaviour TSA bits) in n1; class B: pass twice
    out = tmp_path / "fleet.html"
    p = rig("fleet", "report", "n1", "--db", db, "-o", str(out))
    assert str(out) in p.stdout
    page = out.read_text()
    assert "against each class's previous nightly (1)" in page
    regs, grid = page.split("Host classes &times; models")
    assert f"<td>A</td><td>{CASE.id}</td><td>pass</td>" in regs and "<td>B</td>" not in regs
    assert "EPYC-Milan" in grid and "fail 1" in grid and "pass 1" in grid
    # the first nightly has nothing to regress against
    rig("fleet", "report", "n0", "--db", db, "-o", str(out))
    assert "previous nightly (0)" in out.read_text()
