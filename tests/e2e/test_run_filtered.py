"""`rig run` compares the model's filtered features with QMP's ``filtered-features`` (view "filtered").

Under TCG, QEMU filters what TCG cannot emulate: EPYC-Rome loses e.g. sha-ni and clzero (QEMU prints
"TCG doesn't support requested feature" for each), and ``qemu64,+avx512f`` loses avx512f.  The case's
views keep both tables; they must agree bit for bit and be non-empty, so the view is really fed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_filtered_view_is_predicted_and_compared(tmp_path, qemu_binary):
    (tmp_path / "m.toml").write_text(MATRIX)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"),
                        "--jobs", "2", "--no-history"], env=env, capture_output=True, text=True, timeout=300)
    rows = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()}
    assert len(rows) == 4 and p.returncode == 0, p.stderr[-2000:]
    for r in rows.values():
        assert r["verdict"] == "pass", (r["id"], r.get("unexpected"))
        v = json.loads((tmp_path / "run" / r["artifacts"] / "views.json").read_text())
        qmp, model = CpuidTable.from_json(v["filtered"]), CpuidTable.from_json(v["predicted_filtered"])
        assert list(model.diff(qmp)) == [], r["id"]
        c = r["case"]
        if c["model"] == "EPYC-Rome":
            assert qmp.bit(0x7, 0, "ebx", 29) == 1, "sha-ni is not filtered under TCG?"
        if c["variant"] == "plus-avx512f":
            assert qmp.bit(0x7, 0, "ebx", 16) == 1, "avx512f is not filtered under TCG?"
        if (c["model"], c["variant"]) == ("qemu64", "default"):
            assert not any(v for _, regs in qmp.items() for v in regs.as_tuple() if v), "qemu64 filters nothing"
