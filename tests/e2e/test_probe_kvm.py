"""The probe under this machine's /dev/kvm: the rig must notice when the guest does not see QEMU's CPUID.

On the PVM-based /dev/kvm of the development machines (design.md section 6),
guest code in every CPU mode reads the outer host's CPUID (7.0.EBX F1BF03AB
for any -cpu), while QMP feature-words shows what QEMU configured. The test
does not assert a match. It asserts that the detector reports a host quirk
exactly when the guest's table ignores the configuration:

* where the guest's 7.0.EBX is the same for qemu64 (configured 0) and EPYC-Rome
  (configured non-zero), the hypervisor ignores QEMU: every case must be
  reported as a host quirk, with QMP self-consistent;
* elsewhere (a KVM that applies QEMU's CPUID) the probe must equal
  feature-words, and no quirk may be reported.
"""

from __future__ import annotations

import os

import pytest

from rig.cpuid.enumeration import enumerate_cpuid
from rig.guest.probe_run import run_probe
from rig.guest.quirks import QUIRK_CPUID_NOT_APPLIED, check_qmp, detect_host_quirk, mismatching_words
from rig.host.cpuid_exec import CpuidExecutor
from rig.images.probe import build_probe

pytestmark = pytest.mark.e2e

CASES = ("qemu64", "EPYC-Rome", "Skylake-Server")


@pytest.fixture(scope="module")
def kvm_runs(qemu_binary, tmp_path_factory):
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is absent or not accessible: KVM cases need a host with KVM")
    probe = build_probe()
    runs = {}
    for cpu in CASES:
        run = run_probe(probe, cpu=cpu, workdir=tmp_path_factory.mktemp(cpu), accel="kvm", timeout=30)
        assert run.ok, f"{cpu} under KVM: {run.observation.outcome}: {run.observation.message}"
        runs[cpu] = run
    return runs


def _ignores_config(runs) -> bool:
    a = runs["qemu64"].report.tables["long64"].reg(7, 0, "ebx")
    b = runs["EPYC-Rome"].report.tables["long64"].reg(7, 0, "ebx")
    ca = runs["qemu64"].observation.feature_words.reg(7, 0, "ebx")
    cb = runs["EPYC-Rome"].observation.feature_words.reg(7, 0, "ebx")
    return ca != cb and a == b


def host_raw():
    """This machine's raw CPUID, read by the rig's own CPUID executor."""
    return enumerate_cpuid(CpuidExecutor.open())


@pytest.mark.parametrize("cpu", CASES)
def test_kvm_quirk_detected_or_tables_match(kvm_runs, cpu):
    run = kvm_runs[cpu]
    obs, rep = run.observation, run.report
    qmp = check_qmp(obs.feature_words, filtered_features=obs.filtered_features, expansion=obs.expansion, cpu=cpu)
    assert qmp.consistent, qmp.problems
    quirk = detect_host_quirk(rep, obs.feature_words, filtered_features=obs.filtered_features,
                              expansion=obs.expansion, cpu=cpu, host_raw=host_raw())
    if _ignores_config(kvm_runs):
        assert quirk is not None, "the guest ignores -cpu but no host quirk was reported"
        assert quirk.kind == QUIRK_CPUID_NOT_APPLIED
        assert quirk.modes == rep.modes == ("prot32", "long64")
        words = {w.where() for w in quirk.mismatches["long64"]}
        assert "0x7.0.EBX" in words
        assert "every mode" in quirk.message
        # most differing bits are the host's own (the outer host's CPUID differs from ours in a few)
        assert quirk.host_bits_compared > 0
        assert quirk.host_bits_matching >= quirk.host_bits_compared * 0.8
    else:
        assert quirk is None, quirk.message
        for mode in rep.modes:
            assert mismatching_words(rep.tables[mode], obs.feature_words) == []


def test_kvm_bootsector_every_mode(kvm_runs, tmp_path):
    """Real mode (SeaBIOS boot sector) is affected the same way as prot32/long64."""
    run = run_probe(build_probe(), cpu="EPYC-Rome", workdir=tmp_path, accel="kvm", machine="pc",
                    form="bootsector", timeout=60)
    assert run.ok, f"{run.observation.outcome}: {run.observation.message}"
    rep = run.report
    assert rep.modes == ("real", "prot32", "long64")
    quirk = detect_host_quirk(rep, run.observation.feature_words, filtered_features=run.observation.filtered_features,
                              expansion=run.observation.expansion, cpu="EPYC-Rome")
    if _ignores_config(kvm_runs):
        assert quirk is not None and quirk.modes == ("real", "prot32", "long64")
        pvh = kvm_runs["EPYC-Rome"].report.tables["long64"]
        assert rep.tables["real"].reg(7, 0, "ebx") == pvh.reg(7, 0, "ebx")
    else:
        assert quirk is None


def test_kvm_runtime_experiments_do_not_stop_the_vm(kvm_runs):
    """XSETBV/CR4 writes are emulated by KVM; the probe must finish (no XGETBV emulation failure)."""
    for cpu, run in kvm_runs.items():
        for mode in run.report.modes:
            snaps = run.report.runtime[mode]
            assert snaps and snaps[0].experiment == "osxsave", cpu
            after = run.report.snapshot(mode, "osxsave", "after")
            if after is not None and after.fault is None:
                assert after.bit(1, 0, "ecx", 27) == 1

