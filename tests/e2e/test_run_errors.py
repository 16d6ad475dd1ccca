"""Bad matrices against the real QEMU binary: `rig run` refuses them before any case runs (exit 2, one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.qemu.binaries import find_qemu

pytestmark = pytest.mark.e2e

TEMPLATE = """
[matrix]
name = "bad"
[defaults]
accels = ["tcg"]
machines = ["microvm"]
[[group]]
name = "g"
models = [{models}]
variants = [ {{ name = "default" }}, {{ name = "v", flags = [{flags}] }} ]
"""


@pytest.mark.parametrize(("models", "flags", "message"), [
    ('"Skylake-Servr"', '"+avx2"', "'Skylake-Servr' is not a CPU model of QEMU 7.2"),
    ('"Skylake-Server"', '"+avx3"', "has no CPU property 'avx3' (did you mean avx, avx2?)"),
    ('"Skylake-Server"', '"sse4_3=off"', "has no CPU property 'sse4_3'"),
], ids=["unknown-model", "unknown-flag", "unknown-flag-underscore"])
def test_bad_matrix_is_refused_before_any_case(tmp_path, qemu_binary, models, flags, message):
    series = find_qemu("system").series
    if series != "7.2":
        pytest.skip(f"the messages name QEMU 7.2; the system QEMU is {series}")
    m = tmp_path / "m.toml"
    m.write_text(TEMPLATE.format(models=models, flags=flags))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(m), "--out", str(tmp_path / "run"), "--no-history"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists()
