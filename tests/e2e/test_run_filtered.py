"""`rig run` compares the model's filtered features with QMP's ``filtered-features`` (view "filtered").

Under TCG, QEMU filters what TCG cannot emulate: EPYC-Rome loses e.g. sha-ni and clzero (QEMU prints
"TCG doesn't support requested feature" for each), and ``qemu64,+avx512f`` loses avx512f.  The case's
views keep both tables; they must agree bit for bit and be non-empty, so the view is really fed.
"""

from __future__ import annotations

import pytest

from rig.cpuid.table import CpuidTable

pytestmark = pytest.mark.e2e

MATRIX = """
[matrix]
name = "filtered-run-test"
[defaults]
accels = ["tcg"]
machines = ["microvm"]
timeout = 30
[[group]]
name = "g"
models = ["EPYC-Rome", "qemu64"]
variants = [ { name = "default" }, { name = "plus-avx512f", flags = ["+avx512f"] } ]
"""


def test_filtered_view_is_predicted_and_compared(rig_run, qemu_binary):
    run = rig_run(MATRIX)
    assert len(run.rows) == 4 and run.proc.returncode == 0, run.proc.stderr[-2000:]
    for r in run.rows:
        assert r["verdict"] == "pass", (r["id"], r.get("unexpected"))
        v = run.views(r)
        qmp, model = CpuidTable.from_json(v["filtered"]), CpuidTable.from_json(v["predicted_filtered"])
        assert list(model.diff(qmp)) == [], r["id"]
        c = r["case"]
        if c["model"] == "EPYC-Rome":
            assert qmp.bit(0x7, 0, "ebx", 29) == 1, "sha-ni is not filtered under TCG?"
        if c["variant"] == "plus-avx512f":
            assert qmp.bit(0x7, 0, "ebx", 16) == 1, "avx512f is not filtered under TCG?"
        if (c["model"], c["variant"]) == ("qemu64", "default"):
            assert not any(v for _, regs in qmp.items() for v in regs.as_tuple() if v), "qemu64 filters nothing"
