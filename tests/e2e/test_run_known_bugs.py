"""A QEMU bug the probe runs into is reported as a finding and, being listed in matrices/known-issues.toml,
as a known bug (verdict "expected", with the issue's link), not hidden by the probe's skip.

QEMU's TCG takes CR4.OSXSAVE as reserved when a model has XSAVE but no 0xD.1.EAX feature (Opteron_G4,
``xsaveopt=off``): the probe skips that experiment rather than hang (guests/probe/PROTOCOL.md), and the
comparison turns the skip into an osxsave finding.  Models with xsaveopt, or without XSAVE, have none.
"""

from __future__ import annotations

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


def test_tcg_osxsave_reserved_is_a_known_bug(rig_run, qemu_binary):
    run = rig_run(MATRIX)
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    rows = {(r["case"]["model"], r["case"]["variant"]): r for r in run.rows}
    assert len(rows) == 6, sorted(rows)
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
