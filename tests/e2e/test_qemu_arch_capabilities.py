"""Reproduction target 7 (design.md §8): QEMU 10.1+ stops offering ARCH_CAPABILITIES to AMD guests of
``-cpu host`` (x86_cpu_get_supported_feature_word: "Windows does not like ARCH_CAPABILITIES on AMD
machines at all"), while KVM advertises it on every host (KVM emulates the MSR); the compat property
``x-arch-cap-always-on`` keeps machine types 10.0 and older as they were.

Host: a Zen3 EPYC 7713 profile imported from libvirt's cputestdata, KVM predicted by the policy model
for Linux 6.12.  ``rig qemu predict host --accel kvm`` with QEMU 11.1 gives 0 where 10.0 gives 1, and
explains the compat property; the same in a ``simulate:`` matrix case per version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.errors import RigError

pytestmark = pytest.mark.e2e

DUMP = "x86_64-cpuid-EPYC-7713-64-Core.xml"
ARCH_CAP = 1 << 29  # CPUID.(EAX=7,ECX=0):EDX[29] (Intel SDM; QEMU's "arch-capabilities")


@pytest.fixture(scope="module")
def profile(libvirt_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rig.qemu.binaries import find_qemu

    for v in ("10.0", "11.1"):
        try:
            find_qemu(v)
        except RigError as e:
            pytest.skip(f"QEMU {v} not available here: {e}")
    out = tmp_path_factory.mktemp("prof") / "epyc7713.json"
    r = _rig("host", "import", str(libvirt_data / DUMP), "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _rig(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def _predict(profile: Path, qemu: str, machine: str) -> tuple[int, str]:
    import json

    r = _rig("qemu", "predict", "host", "--accel", "kvm", "--profile", str(profile), "--kernel", "6.12",
             "--qemu", qemu, "-M", machine, "--json")
    assert r.returncode == 0, r.stderr
    from rig.cpuid.table import CpuidTable

    d = json.loads(r.stdout)
    return CpuidTable.from_json(d["table"]).value(7, 0, "edx"), d


def test_predict_and_explain_per_version(profile: Path) -> None:
    edx10, _ = _predict(profile, "10.0", "microvm")
    edx11, d11 = _predict(profile, "11.1", "microvm")
    assert edx10 & ARCH_CAP and not edx11 & ARCH_CAP
    assert any("QEMU 11.1 has no CPU-model facts" in a for a in d11["approximations"])
    old, _ = _predict(profile, "11.1", "pc-q35-10.0")  # the compat property keeps the 10.0 machine type's ABI
    assert old & ARCH_CAP
    r = _rig("qemu", "predict", "host", "--accel", "kvm", "--profile", str(profile), "--kernel", "6.12",
             "--qemu", "11.1", "--explain", "arch-capabilities")
    assert r.returncode == 0, r.stderr
    why = r.stdout.split("why arch-capabilities:")[1]
    assert "x-arch-cap-always-on" in why and "pc_compat_10_0" in why
    assert "configured    arch-capabilities = 0" in why
    assert "approximate   QEMU 11.1 has no CPU-model facts" in why
    r = _rig("qemu", "predict", "host", "--accel", "kvm", "--profile", str(profile), "--kernel", "6.12",
             "--qemu", "11.1", "-M", "pc-q35-10.0", "--explain", "arch-capabilities")
    assert "x-arch-cap-always-on=true (a compat property of the machine type)" in r.stdout
    assert "configured    arch-capabilities = 1" in r.stdout


def test_simulate_matrix_case_per_version(profile: Path, rig_run) -> None:  # type: ignore[no-untyped-def]
    run = rig_run(f"""
[matrix]
name = "arch-cap"
[defaults]
accels = ["kvm"]
guests = ["probe"]
hosts = ["simulate:{profile}@6.12"]
[[group]]
name = "host"
models = ["host"]
machines = ["q35", "pc-q35-10.0"]
qemu = ["10.0", "11.1"]
""")
    assert run.proc.returncode == 0, run.proc.stderr
    got = {(r["case"]["qemu"], r["case"]["machine"]): int(r["words"]["0x7.0.edx"][0], 16) & ARCH_CAP
           for r in run.rows}
    assert got == {("10.0", "q35"): ARCH_CAP, ("10.0", "pc-q35-10.0"): ARCH_CAP,
                   ("11.1", "q35"): 0, ("11.1", "pc-q35-10.0"): ARCH_CAP}, got
    for r in run.rows:
        assert r["outcome"] == "simulated"
        assert bool(r.get("approximations")) == (r["case"]["qemu"] == "11.1")
    assert "case(s), verdict 'approximate'): QEMU 11.1 has no CPU-model facts" in run.proc.stdout
