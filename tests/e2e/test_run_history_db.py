"""`rig run --history DB`: the report compares with the previous run recorded in *that* database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MATRIX = """
[matrix]
name = "histdb"
[defaults]
accels = ["tcg"]
[[group]]
name = "g"
models = ["qemu64"]
machines = ["microvm"]
variants = [ { name = "default" } ]
"""


def test_second_run_is_compared_with_the_first_in_the_given_database(tmp_path):
    db = tmp_path / "h.sqlite"
    (tmp_path / "m.toml").write_text(MATRIX)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(out: Path) -> str:
        p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(tmp_path / "m.toml"), "--out", str(out),
                            "--history", str(db)], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        return (out / "report.html").read_text()

    assert "No previous run of this matrix on this host" in run(tmp_path / "a")
    assert db.is_file()
    assert "Compared with the previous run of this matrix on this host" in run(tmp_path / "b")
