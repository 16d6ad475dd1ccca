"""History DB: runs keyed by host, "what changed since the previous run on this host"."""

from __future__ import annotations

import pytest

from rig.cpuid.table import Location
from rig.history.db import History, HistoryError, format_diff
from rig.history.fingerprint import HostFingerprint, current
from rig.results import DEFAULT_FAIL_ON, Case, CaseResult, Finding, judge

HOST_A = HostFingerprint("node1", "AMD EPYC 7B13", "0xa0011d1", "6.1.0-28-amd64", "7.2.22")
HOST_A_NEW_KERNEL = HostFingerprint("node1", "AMD EPYC 7B13", "0xa0011d1", "6.12.38-amd64", "7.2.22")
HOST_B = HostFingerprint("node2", "Intel Xeon", "0x2b000620", "6.1.0-28-amd64", "7.2.22")

CASE = Case("native", "system", "kvm", "microvm", "EPYC-Milan")
OTHER = Case("native", "system", "kvm", "microvm", "EPYC-Rome")


def res(case: Case, ebx_obs: str, findings: list[Finding] = ()) -> CaseResult:
    return judge(CaseResult(case, "ok", findings=list(findings), words={"0x80000021.0.ecx": [None, "00000000", ebx_obs]}),
                 DEFAULT_FAIL_ON)


def tsa(cls: str = "kvm-behaviour") -> Finding:
    # 0x80000021.ECX[1] is TSA_SQ_NO, [2] TSA_L1_NO (AMD; kernel cpufeatures.h)
    return Finding(Location(0x80000021, 0, "ecx", 1), "tsa-sq-no", cls, cls, "guest", None, 0, {"long64": 1})


def test_fingerprint_keys():
    assert HOST_A.host_key == HOST_A_NEW_KERNEL.host_key  # same machine
    assert HOST_A.fingerprint != HOST_A_NEW_KERNEL.fingerprint  # other software
    assert HOST_A.host_key != HOST_B.host_key
    assert HOST_A_NEW_KERNEL.changes(HOST_A) == ["kernel 6.1.0-28-amd64 -> 6.12.38-amd64"]
    assert HostFingerprint.from_json(HOST_A.to_json()) == HOST_A


def test_current_reads_cpuinfo(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654\nmicrocode\t: 0xa101148\n")
    fp = current("7.2.22", p)
    assert fp.cpu_model == "AMD EPYC 9654" and fp.microcode == "0xa101148" and fp.qemu == "7.2.22"


def test_diff_against_previous_run_on_same_host(tmp_path):
    with History(tmp_path / "h.sqlite") as db:
        r1 = db.record(run_dir=tmp_path / "r1", matrix="nightly", host=HOST_A, started_at="1",
                       results=[res(CASE, "00000000"), res(OTHER, "00000000")])
        # another host in between must not be the "previous run"
        db.record(run_dir=tmp_path / "rb", matrix="nightly", host=HOST_B, started_at="2", results=[res(CASE, "ffffffff")])
        r2 = db.record(run_dir=tmp_path / "r2", matrix="nightly", host=HOST_A_NEW_KERNEL, started_at="3",
                       results=[res(CASE, "00000006", [tsa()]), res(OTHER, "00000000")])
        new = db.run(r2)
        prev = db.previous(new)
        assert prev is not None and prev.id == r1
        d = db.diff_runs(prev, new)
        assert d.host_changes == ["kernel 6.1.0-28-amd64 -> 6.12.38-amd64"]
        assert [(b.location, b.old, b.new, b.view) for b in d.bit_changes] == [
            ("0x80000021.ECX[1]", 0, 1, "observed"), ("0x80000021.ECX[2]", 0, 1, "observed")]
        assert [n for _, _, n, _ in d.new_findings] == ["tsa-sq-no"] and not d.fixed_findings
        text = format_diff(d)
        assert "kernel 6.1.0-28-amd64 -> 6.12.38-amd64" in text and "new findings (1)" in text
        # the fix lands: the finding is gone
        r3 = db.record(run_dir=tmp_path / "r3", matrix="nightly", host=HOST_A_NEW_KERNEL, started_at="4",
                       results=[res(CASE, "00000000"), res(OTHER, "00000000")])
        d = db.diff_runs(db.run(r2), db.run(r3))
        assert [n for _, _, n, _ in d.fixed_findings] == ["tsa-sq-no"] and not d.new_findings
        # recording a run directory again (after --resume) replaces it
        db.record(run_dir=tmp_path / "r3", matrix="nightly", host=HOST_A_NEW_KERNEL, started_at="4",
                  results=[res(CASE, "00000000")])
        assert len(db.runs(host=HOST_A.host_key)) == 3
        assert db.diff_runs(db.run(r1), db.run(r1)).empty


def test_bad_database_file(tmp_path):
    p = tmp_path / "h.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryError, match="not a usable history database"):
        History(p)
