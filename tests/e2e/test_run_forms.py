"""`rig run` with forced boot forms: ``q35+qboot`` / ``pc+qboot`` (the PVH probe under QEMU's qboot firmware) and
``q35+pvh`` (the PVH probe through SeaBIOS) give the same three agreeing views as the default forms, with a
prediction (the form suffix is the rig's, the QEMU model sees the plain machine type)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MATRIX = """
[matrix]
name = "forms-test"
[defaults]
accels = ["tcg"]
timeout = 30
[[group]]
name = "g"
models = ["Skylake-Server"]
machines = ["q35+qboot", "pc+qboot", "q35+pvh"]
variants = [ { name = "no-avx2", flags = ["avx2=off"] } ]
"""


def test_forced_forms_run_and_agree(tmp_path, qemu_binary):
    if not any(Path(d, "qboot.rom").exists() for d in ("/usr/share/qemu", "/usr/share/seabios")):
        pytest.skip("qboot.rom is not installed (Debian: qemu-system-data)")
    (tmp_path / "m.toml").write_text(MATRIX)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"),
                        "--jobs", "2", "--no-history"], env=env, capture_output=True, text=True, timeout=300)
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and p.returncode == 0, p.stderr[-2000:]
    for r in rows:
        assert r["verdict"] == "pass", (r["id"], r.get("unexpected"), r["message"])
        assert "no prediction" not in r["message"], r["message"]
        predicted, configured, observed = r["words"]["0x7.0.ebx"]
        assert predicted == configured == observed and not int(observed, 16) & (1 << 5), r["id"]  # avx2 off
        cmd = (tmp_path / "run" / r["artifacts"] / "cmdline.txt").read_text()
        views = json.loads((tmp_path / "run" / r["artifacts"] / "views.json").read_text())
        assert views["form"] == "pvh" and "-kernel" in cmd
        assert ("-bios qboot.rom" in cmd) == r["case"]["machine"].endswith("+qboot"), cmd
