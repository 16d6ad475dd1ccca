"""Design §8 reproduction targets, simulated on libvirt's recorded CPUs with the imported policies.

Expected values come from the kernel rules cited in each test (Debian 6.1.176,
6.12.117, 7.3.4 sources), not from the model's output.
"""

from __future__ import annotations

import pytest

from rig.host.importer import import_dump
from rig.policy import load_policy, predict_supported


@pytest.fixture(scope="module")
def cpu(libvirt_data):
    def load(name: str):
        p = libvirt_data / f"x86_64-cpuid-{name}.xml"
        if not p.exists():
            pytest.skip(f"{p.name} missing from the libvirt cputestdata")
        return import_dump(p)

    return load


def supported(profile, version: str):
    return predict_supported(profile, load_policy(version)).table


def test_8_3_amd_spec_ctrl_needs_amd_ibpb_ret_since_the_fix(cpu):
    """6.12: SPEC_CTRL if IBPB && IBRS; 7.3: only with AMD_IBPB_RET && AMD_IBPB && AMD_IBRS (cpuid.c, 7.0.EDX[26])."""
    zen2, zen4 = cpu("EPYC-7502-32-Core"), cpu("EPYC-9334-32-Core")
    assert zen2.raw.bit(0x80000008, 0, "ebx", 30) == 0 and zen4.raw.bit(0x80000008, 0, "ebx", 30) == 1  # IBPB_RET
    assert supported(zen2, "6.12").bit(7, 0, "edx", 26) == 1
    assert supported(zen2, "7.3").bit(7, 0, "edx", 26) == 0
    assert supported(zen4, "7.3").bit(7, 0, "edx", 26) == 1


def test_8_4_0x80000021_synthesized_for_zen2(cpu):
    """Host max 0x80000020 >= 0x8000001D: KVM raises the max to 0x80000021 and fills LFENCE_RDTSC, NULL_SEL_CLR_BASE."""
    zen2 = cpu("EPYC-7502-32-Core")
    assert zen2.raw.max_extended == 0x80000020
    for v in ("6.1", "6.12", "7.3"):
        t = supported(zen2, v)
        assert t.value(0x80000000, 0, "eax") == 0x80000021, v
        assert t.bit(0x80000021, 0, "eax", 2) == 1 and t.bit(0x80000021, 0, "eax", 6) == 1, v


def test_8_6_xtile_cfg_without_xtile_data_before_the_fix(cpu):
    """6.1's kvm_get_filtered_xcr0() drops only XTILE_DATA; 6.12 also drops XTILE_CFG without permission."""
    spr = cpu("Xeon-w7-3465X")
    assert spr.raw.value(0xD, 0, "eax") >> 17 & 3 == 3
    t61, t612 = supported(spr, "6.1"), supported(spr, "6.12")
    assert (t61.bit(0xD, 0, "eax", 17), t61.bit(0xD, 0, "eax", 18)) == (1, 0)
    assert (t612.bit(0xD, 0, "eax", 17), t612.bit(0xD, 0, "eax", 18)) == (0, 0)


def test_8_7_kvm_always_advertises_arch_capabilities_on_amd(cpu):
    """ARCH_CAPABILITIES (7.0.EDX[29]) is emulated: kvm_cpu_cap_set (6.1/6.12), EMULATED_F (7.3)."""
    zen3 = cpu("EPYC-7713-64-Core")
    assert zen3.raw.bit(7, 0, "edx", 29) == 0
    for v in ("6.1", "6.12", "7.3"):
        assert supported(zen3, v).bit(7, 0, "edx", 29) == 1, v


def test_hypervisor_and_tsc_deadline_enter_in_6_14(cpu):
    zen3 = cpu("EPYC-7713-64-Core")
    for v, want in (("6.12", 0), ("7.3", 1)):
        t = supported(zen3, v)
        assert (t.bit(1, 0, "ecx", 31), t.bit(1, 0, "ecx", 24)) == (want, want), v
