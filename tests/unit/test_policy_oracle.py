"""The committed policies against real KVM: L1 profiles measured in emulated hosts.

Each profile in data/policy/oracle-profiles carries the KVM_GET_SUPPORTED_CPUID
that a real Debian kernel's kvm_amd returned; the model must reproduce it bit
for bit from the profile's raw CPUID, kernel caps and module parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.host.profile import HostProfile
from rig.policy import compare_supported, load_policy, predict_supported
from rig.policy.check import check

DATA = Path(__file__).parent / "data" / "policy" / "oracle-profiles"
PROFILES = sorted(DATA.glob("*.json"))


def series(p: Path) -> str:
    return p.stem.split("@", 1)[1].split(",", 1)[0]


def test_profiles_present():
    assert len(PROFILES) >= 12, "the oracle profiles are part of the repository"
    assert {series(p) for p in PROFILES} >= {"6.1", "6.12", "6.16", "6.17", "6.18", "7.2", "7.3"}


def test_tsa_bug_in_real_kvm_of_the_pre_fix_kernels():
    """Real KVM on the emulated EPYC-Milan (Zen3, its kernel lists the tsa bug): 0x80000021.ECX = 0x6 on Debian
    6.16.12/6.17.13/6.18.15 (pre-fix SYNTHESIZED_F), 0 on 7.2.13/7.3.4; the model agrees on each."""
    for s, ecx in (("6.16", 6), ("6.17", 6), ("6.18", 6), ("7.2", 0), ("7.3", 0)):
        prof = HostProfile.load(DATA / f"EPYC-Milan@{s}.json")
        assert "tsa" in prof.kernel.bugs, s
        assert prof.kvm.supported.value(0x80000021, 0, "ecx") == ecx, s
        assert predict_supported(prof, load_policy(s)).table.value(0x80000021, 0, "ecx") == ecx, s


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_model_reproduces_measured_supported_cpuid(path: Path):
    prof = HostProfile.load(path)
    pol = load_policy(prof.kernel.release or series(path))
    assert pol.version == series(path)
    res = check(prof, pol, known=[])
    assert res.differences == [], "\n".join(str(d) for d in res.differences)


def test_param_override_reproduces_the_measured_nested_0_host():
    """--param kvm_amd.nested=0 on the nested=1 capture predicts what the nested=0 capture measured."""
    on = HostProfile.load(DATA / "EPYC-Rome@7.3.json")
    off = HostProfile.load(DATA / "EPYC-Rome@7.3,nested=0.json")
    pol = load_policy("7.3")
    pred = predict_supported(on, pol, {"kvm_amd.nested": "0"})
    assert compare_supported(pred.table, off.kvm.supported, pol) == []
    # and the two measurements really differ (SVM and the 0x8000000A leaf)
    diffs = compare_supported(on.kvm.supported, off.kvm.supported, pol)
    assert any(d.feature == "SVM" for d in diffs)


def test_npt_0_changes_what_the_model_says():
    on = HostProfile.load(DATA / "EPYC-Rome@6.12.json")
    npt0 = HostProfile.load(DATA / "EPYC-Rome@6.12,npt=0.json")
    pol = load_policy("6.12")
    pred = predict_supported(on, pol, {"kvm_amd.npt": "N"})
    assert compare_supported(pred.table, npt0.kvm.supported, pol) == []
    assert pred.table != predict_supported(on, pol).table


def test_kernel_versions_differ_on_the_same_cpu():
    """6.1 and 7.3 answer differently for EPYC-Rome (e.g. 0x80000021 and 7.x's HYPERVISOR bit)."""
    a = HostProfile.load(DATA / "EPYC-Rome@6.1.json")
    b = HostProfile.load(DATA / "EPYC-Rome@7.3.json")
    d = compare_supported(a.kvm.supported, b.kvm.supported)
    assert d, "real KVM of 6.1 and 7.3 differ on this CPU"
    pa = predict_supported(a, load_policy("6.1")).table
    pb = predict_supported(b, load_policy("7.3")).table
    assert {str(x.location) for x in compare_supported(pa, pb)} == {str(x.location) for x in d}


def test_vgif_parameter_on_max():
    """-cpu max has VGIF: kvm_amd vgif=1 advertises it (0x8000000A.EDX[16]), vgif=0 does not -- both measured."""
    on = HostProfile.load(DATA / "max@7.3.json")
    off = HostProfile.load(DATA / "max@7.3,vgif=0.json")
    pol = load_policy("7.3")
    assert on.kvm.supported.bit(0x8000000A, 0, "edx", 16) == 1 and off.kvm.supported.bit(0x8000000A, 0, "edx", 16) == 0
    pred = predict_supported(on, pol, {"kvm_amd.vgif": "0"})
    assert compare_supported(pred.table, off.kvm.supported, pol) == []


def test_emulated_run_cases_on_a_stand_in_policy_are_marked_approximate():
    """rig run on emulated:EPYC-Milan@6.16: the KVM-layer comparison uses the 6.16 stand-in, so the case says so."""
    from rig.run.emulated import kvm_approximations

    (a,) = kvm_approximations(HostProfile.load(DATA / "EPYC-Milan@6.16.json"))
    assert "linux-6.16" in a and "linux-6.17" in a and "HAND-WRITTEN" in a
    assert kvm_approximations(HostProfile.load(DATA / "EPYC-Milan@6.18.json")) == []
