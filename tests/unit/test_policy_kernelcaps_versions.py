"""Kernel-caps derivation rules per kernel version, against the kernel sources' conditions.

Facts (read in Debian's sources, arch/x86/kernel/cpu/amd.c tsa_init() and common.c cpu_set_bug_bits()):
* 6.17.8, 6.18.15, 7.2.13: TSA_SQ_NO/TSA_L1_NO on every bare-metal AMD CPU but Zen3/Zen4 (Zen5 gets them);
* 6.12.117, 7.3.4: Zen5 excluded too, and TSA_FILL_NO on all but Zen5;
* 6.1.176: every AMD family but 19h;
* X86_BUG_EIBRS_PBRSB: IA32_ARCH_CAPABILITIES.IBRS_ALL (bit 1) without PBRSB_NO (bit 24), Intel only; KVM 6.13+
  advertises AMD_IBPB_RET only without that bug (arch/x86/kvm/cpuid.c).
libvirt's recorded CPUs: Ice Lake-SP (MSR 0x10a = 0xb: IBRS_ALL, no PBRSB_NO), Xeon 6788P (Granite Rapids,
0x0da9fdeb: PBRSB_NO), EPYC 7713 (Zen3), EPYC 9334 (Zen4), Ryzen 9 9950X (Zen5), EPYC 7502 (Zen2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.host.importer import import_dump
from rig.policy import load_policy, predict_supported
from rig.policy.kernelcaps import kernel_caps

AMD_IBPB_RET = (0x80000008, 0, "ebx", 30)


@pytest.fixture(scope="module")
def cpu(libvirt_data: Path):
    def load(name: str):
        p = libvirt_data / f"x86_64-cpuid-{name}.xml"
        if not p.exists():
            pytest.skip(f"{p.name} missing from the libvirt cputestdata")
        return import_dump(p)
    return load


@pytest.mark.parametrize("kernel,zen5_sq,fill_rule", [("6.17", True, False), ("6.18", True, False),
                                                      ("7.2", True, False), ("6.12", False, True),
                                                      ("7.3", False, True)])
def test_tsa_init_per_kernel_version(cpu, kernel, zen5_sq, fill_rule):
    pol = load_policy(kernel)
    zen2, zen3, zen4, zen5 = (kernel_caps(cpu(n), pol) for n in (
        "EPYC-7502-32-Core", "EPYC-7713-64-Core", "EPYC-9334-32-Core", "Ryzen-9-9950X-16-Core"))
    assert zen2.has("TSA_SQ_NO") and zen2.has("TSA_L1_NO")
    for z in (zen3, zen4):
        assert not z.has("TSA_SQ_NO") and not z.has("TSA_L1_NO") and z.has_bug("TSA")
    assert zen5.has("TSA_SQ_NO") is zen5_sq and zen5.has("TSA_L1_NO") is zen5_sq
    # TSA_FILL_NO: set on all but Zen5 where tsa_init() has that rule (7.2 defines the flag, never sets it)
    assert not zen5.has("TSA_FILL_NO") and zen2.has("TSA_FILL_NO") is fill_rule
    why = zen2.why("TSA_SQ_NO") or ""
    assert "tsa_init()" in why and "[kernels " in why and kernel in why  # the rule names the versions it holds for


def test_tsa_init_6_1_excludes_family_19h(cpu):
    pol = load_policy("6.1")
    assert kernel_caps(cpu("EPYC-7502-32-Core"), pol).has("TSA_SQ_NO")
    assert not kernel_caps(cpu("EPYC-9334-32-Core"), pol).has("TSA_SQ_NO")


def test_eibrs_pbrsb_and_amd_ibpb_ret(cpu):
    ice, gnr = cpu("Ice-Lake-Server"), cpu("Xeon-6788P")
    for kernel in ("6.12", "6.18", "7.3"):
        pol = load_policy(kernel)
        ki, kg = kernel_caps(ice, pol), kernel_caps(gnr, pol)
        assert ki.has("IBRS_ENHANCED") and ki.has_bug("EIBRS_PBRSB"), kernel
        assert kg.has("IBRS_ENHANCED") and not kg.has_bug("EIBRS_PBRSB"), kernel
    # KVM 6.13+: AMD_IBPB_RET only without X86_BUG_EIBRS_PBRSB; 6.12 does not know the bit
    assert predict_supported(ice, load_policy("7.3")).table.bit(*AMD_IBPB_RET) == 0
    assert predict_supported(gnr, load_policy("7.3")).table.bit(*AMD_IBPB_RET) == 1
    assert predict_supported(ice, load_policy("6.12")).table.bit(*AMD_IBPB_RET) == 0


def test_eibrs_pbrsb_on_the_other_recorded_intel_cpus(cpu):
    """ARCH_CAPABILITIES recorded by libvirt: Sapphire Rapids w7-3465X (0x6ca8fdeb), Emerald Rapids Gold 6530
    (0x6c28fdeb) and Alder Lake i7-1270P (0x1488fd6b) have IBRS_ALL without PBRSB_NO: bug.  Atom P5362 (Snow Ridge,
    INTEL_ATOM_TREMONT_D 6/0x86) has IBRS_ALL without PBRSB_NO too, but cpu_vuln_whitelist exempts it."""
    from rig.policy.kernelcaps import signature

    pol = load_policy("7.3")
    for name in ("Xeon-w7-3465X", "Xeon-Gold-6530", "Core-i7-1270P"):
        k = kernel_caps(cpu(name), pol)
        assert k.has("IBRS_ENHANCED") and k.has_bug("EIBRS_PBRSB"), name
        assert predict_supported(cpu(name), pol).table.bit(*AMD_IBPB_RET) == 0, name
    atom = cpu("Atom-P5362")
    assert signature(atom.raw)[:2] == (6, 0x86)
    k = kernel_caps(atom, pol)
    assert k.has("IBRS_ENHANCED") and not k.has_bug("EIBRS_PBRSB")
