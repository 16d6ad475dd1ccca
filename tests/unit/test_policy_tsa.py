"""The TSA scenario (design §8.1/8.2) on libvirt's recorded CPUs, with explain traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.host.importer import import_dump
from rig.policy import load_policy, predict_supported
from rig.policy.explain import render, resolve
from rig.policy.store import select

TSA_SQ_NO = (0x80000021, 0, "ecx", 1)
TSA_L1_NO = (0x80000021, 0, "ecx", 2)


@pytest.fixture(scope="module")
def cpus(libvirt_data: Path):
    out = {}
    for key, name in (("zen2", "EPYC-7502-32-Core"), ("zen3", "EPYC-7713-64-Core"), ("zen4", "EPYC-9334-32-Core")):
        p = libvirt_data / f"x86_64-cpuid-{name}.xml"
        if not p.exists():
            pytest.skip(f"{p.name} missing from the libvirt cputestdata")
        out[key] = import_dump(p)
    return out


def tsa_bits(profile, version: str) -> tuple[int, int]:
    t = predict_supported(profile, load_policy(version)).table
    return t.bit(*TSA_SQ_NO), t.bit(*TSA_L1_NO)


def test_pre_fix_kernels_get_pre_fix_policies():
    # 6.17/6.18 are imported from Debian's source packages: their cpuid.c has the pre-fix SYNTHESIZED_F
    for v in ("6.17.13", "6.18.15"):
        pol = load_policy(v)
        assert not pol.hand_written and pol.synthesized == "prefix", v
    # 6.16: a hand-written stand-in for linux-6.17 (no 6.16 source served), said to be approximate
    e, why = select("6.16.12")
    assert e.name == "6.16" and "APPROXIMATE" in why and load_policy("6.16").synthesized == "prefix"
    assert select("7.0-rc2")[0].name == "6.19"  # nearest not newer, pre-fix (6.19.11 has no stable fix)
    fixed = load_policy("7.0")  # the fix is in 7.0-rc3
    assert fixed.hand_written and fixed.synthesized == "fixed" and "4b3b8a8b0df1" in fixed.commits
    assert select("7.3.4")[0].name == "7.3"
    # the what-if variant is reachable by name only
    assert load_policy("7.3-tsa-prefix").synthesized == "prefix"


@pytest.mark.parametrize("cpu", ["zen3", "zen4"])
def test_zen3_zen4_kernel_lacks_tsa_no_prefix_advertises_fixed_does_not(cpus, cpu):
    prof = cpus[cpu]
    k = predict_supported(prof, load_policy("7.3")).kernel
    assert not k.has("TSA_SQ_NO") and not k.has("TSA_L1_NO")  # tsa_init() does not synthesize them on Zen3/4
    assert tsa_bits(prof, "7.3-tsa-prefix") == (1, 1)
    assert tsa_bits(prof, "7.3") == (0, 0)


def test_zen2_kernel_synthesized_both_advertise(cpus):
    prof = cpus["zen2"]
    k = predict_supported(prof, load_policy("7.3")).kernel
    assert k.has("TSA_SQ_NO") and "assumed" in (k.why("TSA_SQ_NO") or "")
    assert tsa_bits(prof, "7.3-tsa-prefix") == (1, 1)
    assert tsa_bits(prof, "7.3") == (1, 1)
    # 6.12.117 carries the stable backport (kvm_cpu_cap_check_and_set) and agrees
    assert tsa_bits(prof, "6.12") == (1, 1)


def test_6_1_has_the_stable_backport_zen3_gets_no_tsa_bits(cpus):
    pol = load_policy("6.1")
    # Debian 6.1.176 has the stable backport as well: TSA_SQ_NO/L1_NO, no TSA_FILL_NO
    assert "TSA_SQ_NO" in pol.features and "TSA_FILL_NO" not in pol.features
    assert tsa_bits(cpus["zen3"], "6.1") == (0, 0)


def test_explain_tsa_sq_no_under_both_semantics(cpus):
    prof = cpus["zen3"]
    texts = {}
    for ver in ("7.3", "7.3-tsa-prefix"):
        pol = load_policy(ver)
        pred = predict_supported(prof, pol)
        texts[ver] = render(pred, resolve(pol, "TSA_SQ_NO"), f"policy {ver}")
    for ver, text in texts.items():
        for layer in ("raw", "kernel caps", "macro", "leaf rule", "supported"):
            assert f"  {layer} " in text, (ver, layer, text)
        assert "arch/x86/kvm/cpuid.c:" in text and "tsa_init()" in text
    assert "fixed SYNTHESIZED_F" in texts["7.3"] and "0x80000021.ECX[1] = 0" in texts["7.3"]
    assert "pre-fix SYNTHESIZED_F" in texts["7.3-tsa-prefix"] and "0x80000021.ECX[1] = 1" in texts["7.3-tsa-prefix"]
    assert "31272abd5974" in texts["7.3-tsa-prefix"]
