"""The host-quirk detector (rig/guest/quirks.py) on tables shaped like real runs.

Values: ``PVM_7`` is what guests read for 7.0.EBX on this machine's PVM
/dev/kvm for every -cpu (design.md section 6). ``ROME_7`` is QEMU's EPYC-Rome
configuration of 7.0.EBX under that KVM (QMP feature-words of a real run).
"""

from __future__ import annotations

import pytest

from rig.cpuid.table import CpuidTable, Regs
from rig.guest.quirks import (
    QUIRK_CPUID_NOT_APPLIED,
    check_qmp,
    cpu_flags,
    detect_host_quirk,
    mismatching_words,
    runtime_bits,
)

PVM_7 = 0xF1BF03AB
ROME_7 = 0x01800000
AVX2 = 1 << 5  # 7.0.EBX[5]


def fw(ebx7: int, ecx1: int = 0x80202000) -> CpuidTable:
    t = CpuidTable()
    t.set(1, 0, Regs(None, None, ecx1, 0x078BFBFF))
    t.set(7, 0, Regs(None, ebx7, 0, 0))
    return t


def guest(ebx7: int, ecx1: int = 0x80202000) -> CpuidTable:
    t = CpuidTable()
    t.set(1, 0, Regs(0x00830F10, 0x800, ecx1, 0x078BFBFF))
    t.set(7, 0, Regs(0, ebx7, 0, 0))
    return t


def test_agreeing_guest_is_no_quirk():
    assert detect_host_quirk({"prot32": guest(ROME_7), "long64": guest(ROME_7)}, fw(ROME_7)) is None


def test_runtime_bits_are_not_a_difference():
    names = {b.name for b in runtime_bits()}
    assert {"osxsave", "ospke", "apic"} <= names
    osxsave = 0x80202000 | (1 << 27)
    assert mismatching_words(guest(ROME_7, osxsave), fw(ROME_7)) == []
    assert len(mismatching_words(guest(ROME_7, osxsave), fw(ROME_7), ignore_runtime=False)) == 1


def test_pvm_shape_is_detected_in_every_mode():
    host = guest(PVM_7 | (1 << 10))  # this machine's raw 7.0.EBX is F1BF07AB
    q = detect_host_quirk({"prot32": guest(PVM_7), "long64": guest(PVM_7)}, fw(ROME_7), host_raw=host)
    assert q is not None and q.kind == QUIRK_CPUID_NOT_APPLIED
    assert q.modes == ("prot32", "long64") and q.agreeing_modes == ()
    (w,) = q.mismatches["long64"]
    assert (w.leaf, w.reg, w.observed, w.configured) == (7, "ebx", PVM_7, ROME_7)
    assert "every mode" in q.message and "F1BF03AB" in q.message and "self-consistent" in q.message
    diff = bin(PVM_7 ^ ROME_7).count("1")
    assert (q.host_bits_matching, q.host_bits_compared) == (2 * diff, 2 * diff)
    assert q.to_json()["mismatches"]["prot32"][0]["observed"] == "f1bf03ab"


def test_one_mode_differs():
    q = detect_host_quirk({"prot32": guest(ROME_7), "long64": guest(PVM_7)}, fw(ROME_7))
    assert q is not None and q.modes == ("long64",) and q.agreeing_modes == ("prot32",)
    assert "mode(s) long64" in q.message


def test_probe_report_accepted():
    class Report:
        tables = {"long64": guest(PVM_7)}

    assert detect_host_quirk(Report(), fw(ROME_7)) is not None


def test_incoherent_qmp_is_not_a_host_quirk():
    filtered = CpuidTable()
    filtered.set(7, 0, Regs(None, ROME_7, None, None))  # every configured bit also "filtered"
    c = check_qmp(fw(ROME_7), filtered_features=filtered)
    assert not c.consistent and "both configured and filtered" in c.problems[0]
    assert detect_host_quirk({"long64": guest(PVM_7)}, fw(ROME_7), filtered_features=filtered) is None


def expansion(**props):
    return {"model": {"name": "EPYC-Rome", "props": props}}


def test_expansion_agreement():
    # the expansion says avx2 on; feature-words has it: coherent
    assert check_qmp(fw(AVX2), expansion=expansion(avx2=True)).consistent
    c = check_qmp(fw(0), expansion=expansion(avx2=True))
    assert not c.consistent and "avx2" in c.problems[0].lower() and c.checked_features >= 1
    # filtered by the accelerator: off in feature-words is coherent
    filtered = CpuidTable()
    filtered.set(7, 0, Regs(None, AVX2, None, None))
    assert check_qmp(fw(0), filtered_features=filtered, expansion=expansion(avx2=True)).consistent
    # a -avx2 on the -cpu line overrides the model's expansion
    assert check_qmp(fw(0), expansion=expansion(avx2=True), cpu="EPYC-Rome,-avx2").consistent
    assert not check_qmp(fw(AVX2), expansion=expansion(avx2=True), cpu="EPYC-Rome,avx2=off").consistent


def test_no_feature_words():
    assert not check_qmp(None).consistent
    assert detect_host_quirk({"long64": guest(PVM_7)}, None) is None


@pytest.mark.parametrize(
    "cpu,flags",
    [
        (None, {}),
        ("qemu64", {}),
        ("EPYC-Rome,-avx2,+pku", {"avx2": False, "pku": True}),
        ("Skylake-Server,x2apic=off,level=13,vmx=on", {"x2apic": False, "vmx": True}),
    ],
)
def test_cpu_flags(cpu, flags):
    assert cpu_flags(cpu) == flags
