"""Case results: verdicts from findings/outcomes and fail_on; the run directory's atomic lines, torn-line repair, lock."""

from __future__ import annotations

import io
import json

import pytest

from rig.cpuid.table import Location
from rig.results import DEFAULT_FAIL_ON, Case, CaseResult, Finding, IssueRef, judge
from rig.run.progress import Progress
from rig.run.rundir import RunDir, RunDirError


def case(model: str = "EPYC-Rome", flags: tuple[str, ...] = ()) -> Case:
    return Case("native", "system", "tcg", "microvm", model, "v" if flags else "default", flags)


def finding(cls: str, bit: int = 5, issue: IssueRef | None = None) -> Finding:
    return Finding(Location(7, 0, "ebx", bit), f"feat{bit}", cls, cls if cls != "known-bug" else "qemu-behaviour",
                   "guest", 1, 1, {"long64": 0}, issue)


def test_verdicts():
    assert judge(CaseResult(case(), "ok"), DEFAULT_FAIL_ON).verdict == "pass"
    r = judge(CaseResult(case(), "ok", findings=[finding("host-quirk")]), DEFAULT_FAIL_ON)
    assert r.verdict == "expected" and r.unexpected == []
    r = judge(CaseResult(case(), "ok", findings=[finding("known-bug", issue=IssueRef("x", "t", "https://l"))]),
              DEFAULT_FAIL_ON)
    assert r.verdict == "expected"
    r = judge(CaseResult(case(), "ok", findings=[finding("host-quirk"), finding("model-gap", 3)]), DEFAULT_FAIL_ON)
    assert r.verdict == "fail" and r.unexpected == ["model-gap: feat3 0x7.0.EBX[3]"]
    r = judge(CaseResult(case(), "timeout", message="QEMU did not exit within 2 s"), DEFAULT_FAIL_ON)
    assert r.verdict == "fail" and r.unexpected == ["timeout: QEMU did not exit within 2 s"]
    r = judge(CaseResult(case(), "qemu-aborted", message="m", outcome_issue=IssueRef("i", "t", "l")), DEFAULT_FAIL_ON)
    assert r.verdict == "expected" and not r.unexpected
    r = judge(CaseResult(case(), "rig-error", message="bug"), DEFAULT_FAIL_ON)
    assert r.verdict == "error"
    # a matrix that does not fail on timeouts
    r = judge(CaseResult(case(), "timeout", message="slow"), ("model-gap",))
    assert r.verdict == "expected"
    assert judge(CaseResult(case(), "simulated"), DEFAULT_FAIL_ON).verdict == "pass"


def test_result_json_round_trip():
    r = judge(CaseResult(case(flags=("-avx2",)), "ok", findings=[finding("model-gap")], qemu_version="7.2.22",
                         words={"0x7.0.ebx": ["00000020", "00000000", "00000000"]}), DEFAULT_FAIL_ON)
    back = CaseResult.from_json(json.loads(json.dumps(r.to_json())))
    assert back.to_json() == r.to_json()
    assert back.findings[0].location == Location(7, 0, "ebx", 5)


def test_rundir_lines_resume_and_torn_line(tmp_path):
    rd = RunDir.create(tmp_path / "run", "m")
    rd.lock()
    a, b = CaseResult(case("a"), "ok"), CaseResult(case("b"), "ok")
    rd.append(judge(a, DEFAULT_FAIL_ON))
    rd.append(judge(b, DEFAULT_FAIL_ON))
    rd.close()
    # a kill -9 in the middle of a third write leaves half a line
    with open(rd.results_path, "ab") as f:
        f.write(b'{"format":"rig-result/1","id":"c-')
    again = RunDir.open_existing  # needs run.json
    with pytest.raises(RunDirError, match="not a run directory"):
        again(tmp_path / "run")
    (tmp_path / "run" / "run.json").write_text("{}")
    rd2 = again(tmp_path / "run")
    assert rd2.repair() > 0
    assert set(rd2.finished()) == {a.id, b.id}
    assert rd2.results_path.read_bytes().endswith(b"\n")
    assert rd2.repair() == 0


def test_rundir_refuses_a_second_writer_and_an_existing_run(tmp_path):
    rd = RunDir.create(tmp_path / "run", "m")
    rd.lock()
    rd.append(CaseResult(case(), "ok"))
    other = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="in use by another rig run"):
        other.lock()
    rd.close()
    with pytest.raises(RunDirError, match="already holds a run.*--resume"):
        RunDir.create(tmp_path / "run", "m")


def test_rundir_rejects_a_corrupt_line(tmp_path):
    rd = RunDir.create(tmp_path / "run", "m")
    rd.results_path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(RunDirError, match=r"results.jsonl:2: not a JSON line"):
        rd.finished()


def test_progress_prints_failures_and_counts():
    out = io.StringIO()
    p = Progress(3, done=1, stream=out, tty=False, every_s=0)
    p(judge(CaseResult(case("a"), "ok"), DEFAULT_FAIL_ON))
    p(judge(CaseResult(case("b"), "timeout", message="QEMU did not exit within 1 s"), DEFAULT_FAIL_ON))
    text = out.getvalue()
    assert "FAIL b-default-microvm-tcg-" in text and "timeout: QEMU did not exit within 1 s" in text
    assert "3/3 pass 1 fail 1" in text


def test_approximate_prediction_verdict_and_round_trip():
    """A case that compares clean on an approximate prediction is 'approximate', not 'pass'; one with an
    unexpected finding still fails; the sentences survive results.jsonl."""
    said = "QEMU 11.1 has no CPU-model facts: modelled with those of QEMU 10.2 (...)"
    r = judge(CaseResult(case(), "ok", approximations=[said]), DEFAULT_FAIL_ON)
    assert r.verdict == "approximate"
    assert CaseResult.from_json(json.loads(json.dumps(r.to_json()))).approximations == (said,)
    bad = judge(CaseResult(case(), "ok", findings=[finding("model-gap")], approximations=[said]), DEFAULT_FAIL_ON)
    assert bad.verdict == "fail"
    assert judge(CaseResult(case(), "ok"), DEFAULT_FAIL_ON).verdict == "pass"
    assert "approximations" not in judge(CaseResult(case(), "ok"), DEFAULT_FAIL_ON).to_json()
