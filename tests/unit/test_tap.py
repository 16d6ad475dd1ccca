"""TAP13 output, read back by tap.py's parser (the TAP consumer kvm-unit-tests-style pipelines use in Python)."""

from __future__ import annotations

import json

import pytest

from rig.cpuid.table import Location
from rig.report.tap import tap_report
from rig.results import DEFAULT_FAIL_ON, Case, CaseResult, Finding, IssueRef, judge

tap_parser = pytest.importorskip("tap.parser", reason="tap.py is in the test extra (pip install 'tap.py[yaml]')")
if not tap_parser.ENABLE_VERSION_13:
    pytest.skip("tap.py without its yaml extra (PyYAML, more-itertools) cannot read YAML blocks",
                allow_module_level=True)


def _results() -> list[dict]:
    base = dict(host="native", qemu="system", accel="tcg", machine="microvm")
    ok = judge(CaseResult(Case(**base, model="qemu64"), "ok"), DEFAULT_FAIL_ON)
    # 0x1.ECX[27] is OSXSAVE (Intel SDM vol. 2A, CPUID leaf 1)
    bug = Finding(Location(1, 0, "ecx", 27), "osxsave", "known-bug", "qemu-behaviour", "runtime", None, 1,
                  {"long64/skip": 0}, IssueRef("tcg-osxsave", "TCG: CR4.OSXSAVE reserved", "https://example.org/1"),
                  note="a note: with # and \"quotes\"")
    exp = judge(CaseResult(Case(**base, model="Opteron_G4"), "ok", findings=[bug]), DEFAULT_FAIL_ON)
    gap = Finding(Location(7, 0, "ebx", 5), "avx2", "model-gap", "model-gap", "guest", 1, 0, {"long64": 0})
    fail = judge(CaseResult(Case(**base, model="EPYC-Rome", variant="no-avx2", flags=("-avx2",)), "ok",
                            findings=[gap]), DEFAULT_FAIL_ON)
    err = judge(CaseResult(Case(**base, model="max"), "rig-error", message="no QEMU facts for 9.9"), DEFAULT_FAIL_ON)
    rows = [r.to_json() for r in (ok, exp, fail, err)]
    approx = dict(rows[0], id="zz-approx", verdict="approximate",
                  message="predicted with the kernel 6.1 policy (nearest to 6.5): `rig policy fetch 6.5` for the exact one")
    future = dict(rows[0], id="zz-future", verdict="some-new-verdict")
    return [*rows, approx, future]


def _parse(text: str):
    lines = list(tap_parser.Parser().parse_text(text))
    assert not [ln for ln in lines if ln.category == "unknown"], "every line is TAP"
    return lines


def test_tap13_version_plan_and_points():
    text = tap_report(_results(), matrix="smoke")
    lines = _parse(text)
    assert lines[0].category == "version" and lines[0].version == 13
    assert lines[1].category == "plan" and lines[1].expected_tests == 6
    tests = {t.description.removeprefix("- ").split("-")[0]: t for t in lines if t.category == "test"}
    assert [t.number for t in lines if t.category == "test"] == list(range(1, 7))
    assert tests["qemu64"].ok and not tests["qemu64"].todo and not tests["qemu64"].skip
    # expected: an expected failure (TODO) naming the known bug
    g4 = tests["Opteron_G4"]
    assert not g4.ok and g4.todo and "known bug tcg-osxsave" in g4.directive.text
    # fail and error: not ok, no directive, YAML diagnostics
    rome, mx = tests["EPYC"], tests["max"]
    assert not rome.ok and not rome.todo and not rome.skip
    y = rome.yaml_block
    assert y["severity"] == "fail" and y["message"] == "model-gap: avx2 0x7.0.EBX[5]"
    assert y["findings"][0] == {"bit": "0x7.0.EBX[5]", "feature": "avx2", "class": "model-gap", "layer": "model-gap",
                                "view": "guest", "predicted": 1, "configured": 0, "observed": {"long64": 0}}
    assert y["cpu"] == "EPYC-Rome,-avx2" and y["machine"] == "microvm"
    assert not mx.ok and mx.yaml_block["severity"] == "error" and mx.yaml_block["message"] == "rig-error: no QEMU facts for 9.9"
    # approximate: ok with SKIP, saying what was used
    zz = [t for t in lines if t.category == "test" and "zz-approx" in t.description][0]
    assert zz.ok and zz.skip and "kernel 6.1 policy" in zz.directive.text
    # a verdict the report does not know is never ok
    fut = [t for t in lines if t.category == "test" and "zz-future" in t.description][0]
    assert not fut.ok and fut.yaml_block["verdict"] == "some-new-verdict"
    # quotes, '#' and ':' survive the YAML round trip
    assert g4.yaml_block["notes"] == ["a note: with # and \"quotes\""]


def test_tap_through_the_cli(tmp_path):
    """`rig report RUN_DIR --tap` prints the TAP stream (and nothing else) on stdout; results.tap is written beside
    junit.xml."""
    import os
    import subprocess
    import sys

    from rig.run.rundir import RunDir, RunInfo

    rd = RunDir.create(tmp_path / "run", "smoke")
    rd.write_info(RunInfo(matrix="m.toml", matrix_name="smoke", started_at="2026-12-02T00:00:00Z", argv=["rig"]))
    for r in _results()[:4]:
        rd.append(CaseResult.from_json(r))
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "RIG_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "report", str(tmp_path / "run"), "--tap"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = _parse(p.stdout)
    assert lines[1].expected_tests == 4 and sum(1 for ln in lines if ln.category == "test") == 4
    assert (tmp_path / "run" / "results.tap").read_text() == p.stdout
    assert "report:" in p.stderr  # the human lines moved to stderr
    json.loads((tmp_path / "run" / "report.json").read_text())
