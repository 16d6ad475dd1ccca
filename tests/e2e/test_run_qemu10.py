"""`rig run` with QEMU 10.0 (Debian bookworm-backports, fetched into the cache) under TCG: every default model
agrees in all three views, including QEMU 10.0's mode-dependent SYSCALL rule for Intel guests.

QEMU 10.0's cpu_x86_cpuid clears SYSCALL (0x80000001.EDX[11]) for an Intel-vendor guest under TCG while
EFER.LMA is clear, so the probe's prot32 table has it off and its long64 table on although QMP's
feature-words has it on.  Before the rig modelled that rule, 22 of the 45 QEMU 10.0 models failed here.
"""

from __future__ import annotations

import pytest

from rig.errors import RigError
from rig.qemu.binaries import find_qemu

pytestmark = pytest.mark.e2e

MATRIX = """
[matrix]
name = "qemu10-run-test"
[defaults]
accels = ["tcg"]
machines = ["microvm"]
qemu = ["10.0"]
timeout = 30
[[group]]
name = "g"
models = ["Skylake-Server", "Cascadelake-Server", "EPYC-Rome", "qemu64"]
variants = [ { name = "default" } ]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory, qemu_binary, rig_run_in):
    try:
        find_qemu("10.0")
    except RigError as e:
        pytest.skip(f"QEMU 10.0 not available here: {e}")
    r = rig_run_in(tmp_path_factory.mktemp("q10run"), MATRIX)
    return r.proc, r.rows, {row["case"]["model"]: r.views(row) for row in r.rows}


def _syscall(views: dict, mode: str) -> int:
    from rig.cpuid.table import CpuidTable

    return CpuidTable.from_json(views["observed"][mode]).bit(0x80000001, 0, "edx", 11)


def test_every_default_model_passes(results):
    p, rows, _ = results
    assert len(rows) == 4
    for r in rows:
        assert r["qemu_version"].startswith("10.0")
        assert r["outcome"] == "ok" and r["verdict"] == "pass", (r["id"], r.get("unexpected"))
    assert p.returncode == 0, p.stderr[-2000:]


def test_syscall_follows_long_mode_for_intel_only(results):
    _, _, views = results
    for model in ("Skylake-Server", "Cascadelake-Server"):
        assert (_syscall(views[model], "prot32"), _syscall(views[model], "long64")) == (0, 1), model
    assert (_syscall(views["EPYC-Rome"], "prot32"), _syscall(views["EPYC-Rome"], "long64")) == (1, 1)
