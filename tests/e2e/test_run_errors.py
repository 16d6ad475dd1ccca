"""Bad matrices against the real QEMU binary: `rig run` refuses them before any case runs (exit 2, one line)."""

from __future__ import annotations

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
def test_bad_matrix_is_refused_before_any_case(rig_run, qemu_binary, models, flags, message):
    series = find_qemu("system").series
    if series != "7.2":
        pytest.skip(f"the messages name QEMU 7.2; the system QEMU is {series}")
    run = rig_run(TEMPLATE.format(models=models, flags=flags), timeout=120)
    p = run.proc
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not (run.out / "results.jsonl").exists()
