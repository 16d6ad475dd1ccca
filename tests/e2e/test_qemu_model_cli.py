"""``rig qemu predict`` as a user runs it (real QEMU 7.2 facts, TCG)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def rig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True, timeout=120)


def test_predict_explains_the_microvm_clflushopt_case(qemu_binary: str) -> None:
    r = rig("qemu", "predict", "Skylake-Server", "-M", "microvm", "--explain", "clflushopt")
    assert r.returncode == 0, r.stderr
    assert "Skylake-Server-v5" in r.stdout and "011803A9" in r.stdout
    assert "clflushopt = 1 in Skylake-Server-v1" in r.stdout
    q35 = rig("qemu", "predict", "Skylake-Server", "-M", "q35")
    assert q35.returncode == 0 and "019803A9" in q35.stdout and "Skylake-Server-v1" in q35.stdout


def test_predict_json_and_errors(qemu_binary: str) -> None:
    r = rig("qemu", "predict", "qemu64,-x2apic,x2apic=on,+avx512f", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["resolved_model"] == "qemu64-v1" and "avx512f" in d["filtered_names"]
    assert any("ambiguous" in n for n in d["notes"])
    bad = rig("qemu", "predict", "Skylake-Servr")
    assert bad.returncode == 2 and "unknown CPU model 'Skylake-Servr'" in bad.stderr and "Traceback" not in bad.stderr
    bad = rig("qemu", "predict", "qemu64,+warp")
    assert bad.returncode == 2 and "no CPU feature 'warp'" in bad.stderr


def test_predict_with_the_policy_model_says_when_it_is_approximate(qemu_binary: str) -> None:
    from pathlib import Path

    rome = str(Path(__file__).resolve().parents[1] / "unit/data/policy/oracle-profiles/EPYC-Rome@7.3.json")
    r = rig("qemu", "predict", "EPYC-Rome", "--accel", "kvm", "--profile", rome, "--kernel", "6.14")
    assert r.returncode == 0, r.stderr
    assert "APPROXIMATE" in r.stderr and "linux-6.12" in r.stderr and "rig policy get 6.14" in r.stderr
    assert "APPROXIMATE" in r.stdout  # the 'supported:' source line carries it too
    exact = rig("qemu", "predict", "EPYC-Rome", "--accel", "kvm", "--profile", rome, "--kernel", "7.3.4")
    assert exact.returncode == 0 and "APPROXIMATE" not in exact.stdout + exact.stderr
    bad = rig("qemu", "predict", "EPYC-Rome", "--accel", "kvm", "--profile", rome, "--kernel", "7.3-tsa-prefx")
    assert bad.returncode == 2 and "did you mean 7.3-tsa-prefix" in bad.stderr
