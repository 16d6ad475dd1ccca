"""`rig run` on an emulated host: one L1 boot (Debian kernel, real KVM under TCG), L2 cases in it, four views."""

from __future__ import annotations

import asyncio
import json

import pytest

from rig.matrix.expand import expand
from rig.matrix.load import load_matrix
from rig.run.context import RunContext
from rig.run.execute import run_cases
from rig.run.rundir import RunDir, RunInfo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MATRIX = """
[matrix]
name = "emulated-test"
[[group]]
models = ["EPYC-Rome"]
variants = [ { name = "default" }, { name = "no-avx2", flags = ["-avx2"] } ]
accels = ["kvm"]
machines = ["microvm"]
hosts = ["emulated:EPYC-Rome@6.12"]
timeout = 90
"""


def test_emulated_host_cases(tmp_path, qemu_binary):
    m = tmp_path / "m.toml"
    m.write_text(MATRIX)
    matrix = load_matrix(m)
    cases = expand(matrix)
    from rig.images.probe import build_probe

    rd = RunDir.create(tmp_path / "run", matrix.name)
    rd.write_info(RunInfo(matrix=str(m), matrix_name=matrix.name, started_at="", argv=["pytest"]))
    results = asyncio.run(run_cases(RunContext(matrix, rd, build_probe()), cases, jobs=2))
    rd.close()
    by = {r.case.variant: r for r in results}
    assert set(by) == {"default", "no-avx2"}
    for r in results:
        assert r.outcome == "ok", r.message
        assert r.verdict == "pass", r.unexpected
        views = json.loads((rd.path / r.artifacts / "views.json").read_text())
        assert views["l1"].startswith("EPYC-Rome@6.12") and views["kvm_measured"] is not None
    # 7.0.EBX: avx2 is bit 5, bmi1 bit 3 (SDM); under L1's real KVM the guest sees what QEMU configured
    for variant, avx2 in (("default", 1), ("no-avx2", 0)):
        p, c, o = (int(x, 16) for x in by[variant].words["0x7.0.ebx"])
        assert (c >> 5 & 1, o >> 5 & 1, p >> 5 & 1) == (avx2, avx2, avx2)
        assert o >> 3 & 1 == 1
