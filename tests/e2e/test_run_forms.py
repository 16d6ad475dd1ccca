"""`rig run` with forced boot forms: ``q35+qboot`` / ``pc+qboot`` (the PVH probe under QEMU's qboot firmware) and
``q35+pvh`` (the PVH probe through SeaBIOS) give the same three agreeing views as the default forms, with a
prediction (the form suffix is the rig's, the QEMU model sees the plain machine type)."""

from __future__ import annotations

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


def test_forced_forms_run_and_agree(rig_run, qemu_binary):
    if not any(Path(d, "qboot.rom").exists() for d in ("/usr/share/qemu", "/usr/share/seabios")):
        pytest.skip("qboot.rom is not installed (Debian: qemu-system-data)")
    run = rig_run(MATRIX)
    assert len(run.rows) == 3 and run.proc.returncode == 0, run.proc.stderr[-2000:]
    for r in run.rows:
        assert r["verdict"] == "pass", (r["id"], r.get("unexpected"), r["message"])
        assert "no prediction" not in r["message"], r["message"]
        predicted, configured, observed = r["words"]["0x7.0.ebx"]
        assert predicted == configured == observed and not int(observed, 16) & (1 << 5), r["id"]  # avx2 off
        cmd = run.artifact(r, "cmdline.txt")
        views = run.views(r)
        assert views["form"] == "pvh" and "-kernel" in cmd
        assert ("-bios qboot.rom" in cmd) == r["case"]["machine"].endswith("+qboot"), cmd
