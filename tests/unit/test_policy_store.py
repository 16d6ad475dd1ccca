"""Policy selection, overlays, assumed kernel caps, known differences, libvirt agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.host.importer import import_dump
from rig.host.profile import HostProfile
from rig.policy import PolicyError, assume_kernel_caps, load_policy, select
from rig.policy.check import check, known_differences
from rig.policy.libvirt import agreement
from rig.policy.store import version_key

ORACLE = Path(__file__).parent / "data" / "policy" / "oracle-profiles"


def test_version_order_and_selection():
    assert version_key("7.0-rc2") < version_key("7.0") < version_key("7.0.1")
    assert version_key("6.12.117+deb13-cloud-amd64") == (6, 12, 117, 10_000)
    assert select("6.1.0-50-cloud-amd64")[0].name == "6.1"
    e, why = select("6.13")
    assert e.name == "6.12" and "nearest not newer" in why
    assert select("7.5")[0].name == "7.3"
    assert select("5.15")[0].name == "5.10" and "APPROXIMATE" in select("5.15")[1]
    with pytest.raises(PolicyError, match="no policy at or below"):
        select("5.4")


def test_imported_policies_describe_their_era():
    p61, p612, p73 = load_policy("6.1"), load_policy("6.12"), load_policy("7.3")
    assert (p61.era, p612.era, p73.era) == ("cap_mask", "cap_mask", "cap_init")
    assert p73.synthesized == "fixed" and p612.synthesized is None
    assert p61.cpuinfo_rule == "unless-empty-quotes" and p612.cpuinfo_rule == "quoted-only"
    # facts of the sources: leaf 0 limit, 0x80000000 limit, KVM-only words
    assert p61.leaves["max_basic"] == 0x1F and p73.leaves["max_basic"] == 0x24
    assert p61.leaves["max_extended"] == 0x80000021 and p612.leaves["max_extended"] == 0x80000022
    assert not p73.words["CPUID_8000_0021_ECX"].kernel and p73.words["CPUID_8000_0021_EAX"].kernel
    # module parameters with their defaults, imported
    assert p73.module_params["svm"]["npt_enabled"]["param"] == "npt"
    assert p73.module_params["kvm"]["enable_pmu"]["default"] == "true"
    # the shared overlay is merged (hand-written hardware-setup rule)
    assert p73.variables["nrips"].requires == "has(NRIPS)"


def test_assumed_kernel_caps_for_a_libvirt_profile(libvirt_data):
    prof = import_dump(libvirt_data / "x86_64-cpuid-EPYC-7713-64-Core.xml")
    k = assume_kernel_caps(prof, load_policy("7.3"))
    assert k.assumed
    assert "avx2" in k.flags and "raw CPUID" in k.assumed_reasons["avx2"]
    # ZEN3 has no /proc/cpuinfo name in 7.3: shown by its lower-case kernel name, derived from family/model
    assert "zen3" in k.flags and "bsp_init_amd" in k.assumed_reasons["zen3"]
    assert "zen2" not in k.flags and "tsa_sq_no" not in k.flags


def test_known_differences_file_reads_and_matches(tmp_path):
    kn = known_differences()
    assert all(k.reason and k.src for k in kn)
    prof = HostProfile.load(ORACLE / "EPYC-Rome@7.3.json")
    pol = load_policy("7.3")
    fake = known_differences({"format": "rig-kvm-known-differences/1", "entries": [
        {"id": "x", "feature": "SVM", "kernels": ["7.3"], "reason": "test", "src": "arch/x86/kvm/svm/svm.c"}]})
    res = check(prof, pol, {"kvm_amd.nested": "0"}, known=fake)
    assert res.differences and any(d.feature == "SVM" for d, _ in res.known)
    assert res.unexplained  # the 0x8000000A leaf also changes and is not covered
    with pytest.raises(PolicyError, match="format"):
        known_differences({"format": "nope"})


def test_libvirt_agreement_figures(libvirt_data, capsys):
    """The model against libvirt's -enabled/-disabled bits (QEMU+KVM, kernel version unrecorded)."""
    total = agree = 0
    worst = 1.0
    for x in sorted(libvirt_data.glob("x86_64-cpuid-*.xml")):
        if x.stem.endswith(("-enabled", "-disabled")):
            continue
        a = agreement(import_dump(x), load_policy("6.12"))
        if a is None:
            continue
        total += a.comparable
        agree += a.agree
        worst = min(worst, a.ratio)
        print(f"{a.name:38} {a.agree:4}/{a.comparable:<4} enabled-not-predicted={a.enabled_not_predicted} "
              f"disabled-but-predicted={a.disabled_but_predicted}")
    print(f"libvirt agreement (linux-6.12 policy): {agree}/{total} = {100 * agree / total:.1f}%, worst CPU {100 * worst:.1f}%")
    assert total > 1500
    assert agree / total > 0.95 and worst > 0.9


def test_srso_flags_follow_kernel_version_and_mitigations_off(libvirt_data):
    """bugs.c:srso_select_mitigation() (6.1) skips IBPB_BRTYPE/SBPB with mitigations=off; 6.12+ sets them in init_amd()."""
    from rig.policy.kernelcaps import derive

    prof = import_dump(libvirt_data / "x86_64-cpuid-EPYC-7713-64-Core.xml")  # Zen3, family 19h
    p61, p73 = load_policy("6.1"), load_policy("7.3")
    assert {"IBPB_BRTYPE", "SBPB"} <= derive(prof.raw, p61).features
    assert not {"IBPB_BRTYPE", "SBPB"} & derive(prof.raw, p61, "quiet mitigations=off").features
    assert {"IBPB_BRTYPE", "SBPB"} <= derive(prof.raw, p73, "mitigations=off").features
    assert "SRSO" in derive(prof.raw, p61).bugs


def test_every_imported_c_condition_has_a_meaning():
    """Conditions the importer keeps as C (c("...")) must be given meaning by the overlay; otherwise the evaluator
    takes them as false with a note -- fine for a user import, not for a shipped policy."""
    import re

    from rig.policy.store import entries

    for e in entries():
        if e.kind != "imported" or e.store != "shipped":
            continue
        pol = load_policy(e.name)
        steps = list(pol.common) + [s for v in pol.vendors.values() for s in v]
        atoms = {a for s in steps if s.cond for a in re.findall(r'c\("((?:[^"\\]|\\.)*)"\)', s.cond)}
        missing = sorted(a for a in atoms if a not in pol.expressions)
        assert not missing, (e.name, missing)


@pytest.mark.parametrize("release,policy", [
    ("6.12.57-cloud-amd64", "6.12"), ("7.3.4+deb13-cloud-amd64", "7.3"), ("5.10.0-32-cloud-amd64", "5.10"),
    ("6.8.0-45-generic", "6.1"), ("5.14.0-427.13.1.el9_4.x86_64", "5.10"), ("6.6.1-arch1-1", "6.1"),
    ("6.12-rc3", "6.12"), ("6.18.15+deb13-cloud-amd64", "6.18"), ("6.16.12+deb13-cloud-amd64", "6.16"),
])
def test_kernel_releases_select_a_policy(release, policy):
    assert select(release)[0].name == policy


@pytest.mark.parametrize("typo,suggestion", [("7.3-tsa-prefx", "7.3-tsa-prefix"), ("7.3-tsa", "7.3-tsa-prefix"),
                                             ("6.19-tsa-fixd", "6.19-tsa-fixed"), ("7.3-tsa-prefix ", None)])
def test_mistyped_policy_names_are_errors_with_suggestions(typo, suggestion):
    if suggestion is None:  # surrounding blanks are not a typo
        assert select(typo)[0].name == typo.strip()
        return
    with pytest.raises(PolicyError, match=f"did you mean {suggestion}"):
        select(typo)
