"""A QEMU bug the probe runs into is reported as a finding and, being listed in matrices/known-issues.toml,
as a known bug (verdict "expected", with the issue's link), not hidden by the probe's skip.

QEMU's TCG takes CR4.OSXSAVE as reserved when a model has XSAVE but no 0xD.1.EAX feature (Opteron_G4,
``xsaveopt=off``): the probe skips that experiment rather than hang (guests/probe/PROTOCOL.md), and the
comparison turns the skip into an osxsave finding.  Models with xsaveopt, or without XSAVE, have none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MATRIX = f"""
[matrix]
name = "known-bugs-test"
known_issues = ["{REPO}/matrices/known-issues.toml"]
[defaults]
accels = ["tcg"]
machines = ["microvm"]
[[group]]
name = "g"
models = ["Opteron_G4", "Broadwell", "qemu64"]
variants = [ {{ name = "default" }}, {{ name = "no-xsaveopt", flags = ["xsaveopt=off"] }} ]
"""


def test_tcg_osxsave_reserved_is_a_known_bug(tmp_path, qemu_binary):
    (tmp_path / "m.toml").write_text(MATRIX)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"),
                        "--jobs", "2", "--no-history"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {(json.loads(x)["case"]["model"], json.loads(x)["case"]["variant"]): json.loads(x)
            for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()}
    hit = {("Opteron_G4", "default"), ("Opteron_G4", "no-xsaveopt"), ("Broadwell", "no-xsaveopt")}
    for key, r in rows.items():
        if key in hit:
            assert r["verdict"] == "expected", key
            assert {(f["name"], f["class"], f["layer"], f["view"]) for f in r["findings"]} == \
                {("osxsave", "known-bug", "qemu-behaviour", "runtime")}, key
            assert {f["issue"]["id"] for f in r["findings"]} == {"tcg-cr4-osxsave-reserved"}
            assert {m for f in r["findings"] for m in f["observed"]} == {"prot32/skip", "long64/skip"}
        else:
            assert r["verdict"] == "pass" and r["findings"] == [], key
