"""QEMU 11.1 (Debian trixie-backports) on a Debian 12 machine: built into the cache as a root of its own
suite (``rig images build qemu 11.1``), started through that root's dynamic loader, and run by ``rig run``
like any other binary: QMP, ``-kernel`` (PVH probe on microvm, SeaBIOS boot sector on q35) and the serial
log all work.  Its series has no facts of its own, so every case says which facts it used and how to get
exact ones, and a clean comparison is ``approximate``, not ``pass``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rig.errors import RigError

pytestmark = pytest.mark.e2e

MATRIX = """
[matrix]
name = "qemu11-run-test"
[defaults]
accels = ["tcg"]
qemu = ["11.1"]
timeout = 30
[[group]]
name = "g"
models = ["qemu64", "EPYC-Rome"]
machines = ["microvm", "q35"]
variants = [ { name = "default" } ]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, rig_run_in):  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    b = subprocess.run([sys.executable, "-m", "rig.cli", "images", "build", "qemu", "11.1", "--json"], env=env,
                       capture_output=True, text=True, timeout=900)
    if b.returncode != 0 and "Debian archive" in b.stderr:
        pytest.skip(f"QEMU 11.1 cannot be fetched here: {b.stderr.strip()[-200:]}")
    assert b.returncode == 0, b.stderr
    return rig_run_in(tmp_path_factory.mktemp("q11run"), MATRIX)


def test_binary_runs_from_its_own_root() -> None:
    from rig.images.qemu import fetch_qemu

    try:
        q = fetch_qemu("11.1")
    except RigError as e:
        pytest.skip(f"QEMU 11.1 not available here: {e}")
    assert q.version.startswith("11.1.")
    launcher = q.binary.read_text()
    assert "ld-linux-x86-64.so.2' '--library-path'" in launcher and str(q.prefix) in launcher
    # the machine's own loader cannot run it (the reason for the root): GLIBC_2.38 and newer libraries
    direct = subprocess.run([str(q.elf), "--version"], capture_output=True, text=True, timeout=30)
    assert direct.returncode != 0 and ("GLIBC_" in direct.stderr or "cannot open shared object" in direct.stderr)


def test_cases_run_and_say_they_are_approximate(run) -> None:  # type: ignore[no-untyped-def]
    assert len(run.rows) == 4, run.proc.stderr[-2000:]
    for r in run.rows:
        assert r["qemu_version"].startswith("11.1"), r["qemu_version"]
        assert r["outcome"] == "ok", (r["id"], r["message"])
        assert any("QEMU 11.1 has no CPU-model facts" in a and "rig qemu facts import" in a
                   for a in r["approximations"]), r
        assert r["verdict"] in ("approximate", "fail"), r["verdict"]
        views = run.views(r)
        assert views["configured"] and views["observed"], r["id"]
        assert "APPROXIMATE: QEMU 11.1 has no CPU-model facts" in r["message"]  # what every report shows
    assert "APPROXIMATE (4 case(s), verdict 'approximate'): QEMU 11.1 has no CPU-model facts" in run.proc.stdout
