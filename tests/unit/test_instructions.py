"""Instruction checks: data consistency, insncheck output parsing, classification."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rig.cpuid.catalogue import catalogue
from rig.cpuid.table import CpuidTable, Regs
from rig.guest.instructions import (
    InsncheckFormatError,
    InsnOutcome,
    InsnRun,
    InstructionDataError,
    classify,
    classify_test,
    instruction_data,
    load_instruction_data,
    parse_insncheck,
)

REPO = Path(__file__).resolve().parents[2]
INSNCHECK_C = REPO / "guests" / "insncheck" / "insncheck.c"


def test_feature_bits_agree_with_the_catalogue():
    # The catalogue is cross-checked against QEMU's property names and /proc/cpuinfo.
    cat = catalogue()
    for fb in instruction_data().features.values():
        f = cat.get(fb.name)
        assert (f.leaf, f.subleaf, f.reg, f.bit) == (fb.leaf, fb.subleaf, fb.reg, fb.bit), fb.name


def test_sdm_locations_of_the_headline_features():
    # Intel SDM vol. 2A, CPUID: AVX 1.ECX[28], AVX2 7.0.EBX[5], AVX-512F 7.0.EBX[16],
    # SHA 7.0.EBX[29], RDPID 7.0.ECX[22], PKU 7.0.ECX[3], RDSEED 7.0.EBX[18].
    f = instruction_data().features
    assert (f["avx"].leaf, f["avx"].reg, f["avx"].bit) == (1, "ecx", 28)
    assert (f["avx2"].leaf, f["avx2"].reg, f["avx2"].bit) == (7, "ebx", 5)
    assert (f["avx512f"].leaf, f["avx512f"].reg, f["avx512f"].bit) == (7, "ebx", 16)
    assert (f["sha_ni"].leaf, f["sha_ni"].reg, f["sha_ni"].bit) == (7, "ebx", 29)
    assert (f["rdpid"].leaf, f["rdpid"].reg, f["rdpid"].bit) == (7, "ecx", 22)
    assert (f["pku"].leaf, f["pku"].reg, f["pku"].bit) == (7, "ecx", 3)
    assert (f["rdseed"].leaf, f["rdseed"].reg, f["rdseed"].bit) == (7, "ebx", 18)


def test_tests_in_data_are_exactly_the_ones_insncheck_has():
    src = INSNCHECK_C.read_text()
    table = src[src.index("static const struct test tests[]"):]
    table = table[: table.index("};")]
    in_c = set(re.findall(r"E\((\w+)\)", table))
    defined = set(re.findall(r"^T\((\w+)\)", src, re.M))
    assert in_c == defined
    assert {t.name for t in instruction_data().tests} == in_c


def test_the_issue_s_feature_list_is_covered():
    names = {t.feature for t in instruction_data().tests}
    for f in ("avx", "avx2", "avx512f", "bmi2", "adx", "sha_ni", "aes", "rdrand", "rdseed", "rdpid", "movbe",
              "popcnt", "fsgsbase", "pku"):
        assert f in names


def test_bad_data_is_rejected(tmp_path):
    p = tmp_path / "i.toml"
    p.write_text('[[feature]]\nname="avx"\nleaf=1\nreg="ecx"\nbit=28\n[[test]]\nname="avx"\nneeds=["avx2"]\n')
    with pytest.raises(InstructionDataError, match="unknown feature 'avx2'"):
        load_instruction_data(p)
    p.write_text('[[feature]]\nname="avx"\nleaf=1\nreg="exx"\nbit=28\n')
    with pytest.raises(InstructionDataError, match="bad register"):
        load_instruction_data(p)
    p.write_text("[[feature]\n")
    with pytest.raises(InstructionDataError, match="i.toml"):
        load_instruction_data(p)


GOOD = """rig-insncheck 1
hwcap2 0x2
xcr0 0x0000000000000007
insn avx ok
insn avx512f fault SIGILL
insn lzcnt legacy
end 3
"""


def test_parse_insncheck():
    run = parse_insncheck(GOOD)
    assert run.hwcap2 == 2 and run.xcr0 == 7
    assert run.outcomes["avx"] == InsnOutcome("ok")
    assert run.outcomes["avx512f"] == InsnOutcome("fault", "SIGILL")
    assert run.outcomes["lzcnt"] == InsnOutcome("legacy")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "does not start"),
        ("hello\n", "does not start"),
        (GOOD.replace("end 3\n", ""), "no 'end' line"),
        (GOOD.replace("end 3", "end 4"), "'end 4' but 3 results"),
        (GOOD.replace("insn avx ok", "insn avx maybe"), "unexpected line"),
        (GOOD + "insn sse3 ok\n", "continues after 'end'"),
    ],
)
def test_parse_insncheck_rejects_broken_output(text, message):
    with pytest.raises(InsncheckFormatError, match=message):
        parse_insncheck(text)


def _table(*, avx=False, osxsave=False, avx512f=False, bmi1=False, pku=False, ospke=False) -> CpuidTable:
    t = CpuidTable()
    ecx1 = (avx << 28) | (osxsave << 27) | (1 << 26)
    t.set(1, 0, Regs(0, 0, ecx1, 0))
    t.set(7, 0, Regs(0, (avx512f << 16) | (bmi1 << 3), (pku << 3) | (ospke << 4), 0))
    return t


def _verdict(test, outcome, table, xcr0=7, accel="tcg", hwcap2=2):
    data = instruction_data()
    run = InsnRun(hwcap2, xcr0, {})
    return classify_test(data.test(test), outcome, table, run, accel, data)


def test_classification_verdicts():
    ok, ill, legacy = InsnOutcome("ok"), InsnOutcome("fault", "SIGILL"), InsnOutcome("legacy")
    adv = _table(avx=True, osxsave=True)
    assert _verdict("avx", ok, adv).verdict == "ok"
    r = _verdict("avx", ill, adv)
    assert r.verdict == "advertised-but-faults" and r.finding and r.layer == "qemu"
    assert _verdict("avx", ill, adv, accel="kvm").layer == "hardware"
    # advertised, but the OS did not enable the AVX state in XCR0: the kernel's doing
    r = _verdict("avx", ill, adv, xcr0=3)
    assert r.verdict == "os-not-enabled" and not r.finding and "XCR0" in r.explanation
    r = _verdict("avx", ill, _table(avx=True, osxsave=False), xcr0=None)
    assert r.verdict == "os-not-enabled" and "osxsave" in r.missing
    # hidden
    hidden = _table()
    r = _verdict("avx512f", ok, hidden)
    assert r.verdict == "hidden-but-works" and r.finding and r.layer == "qemu"
    assert _verdict("avx512f", ill, hidden).verdict == "hidden-faults"
    # LZCNT without ABM runs as BSR: consistent, not a finding; with ABM it is one
    assert _verdict("lzcnt", legacy, hidden).verdict == "hidden-faults"
    assert _verdict("tzcnt", legacy, _table(bmi1=True)).verdict == "advertised-but-faults"
    assert _verdict("sse3", None, hidden).verdict == "not-run"
    # PKU needs the kernel's CR4.PKE (OSPKE)
    assert _verdict("pku", ill, _table(pku=True, ospke=False)).verdict == "os-not-enabled"
    assert _verdict("pku", ill, _table(pku=True, ospke=True)).verdict == "advertised-but-faults"


def test_classify_report_lists_findings():
    run = parse_insncheck(GOOD)
    rep = classify(run, _table(avx=True, osxsave=True), accel="tcg", tests=["avx", "avx512f", "lzcnt"])
    assert [r.verdict for r in rep.results] == ["ok", "hidden-faults", "hidden-faults"]
    assert rep.findings == []
    rep = classify(run, _table(avx=True, osxsave=True, avx512f=True), accel="kvm", tests=["avx512f"])
    assert rep.results[0].verdict == "os-not-enabled"  # XCR0 0x7 lacks the AVX-512 state (0xe0)
    run = parse_insncheck(GOOD.replace("xcr0 0x0000000000000007", "xcr0 0x00000000000000e7"))
    rep = classify(run, _table(avx=True, osxsave=True, avx512f=True), accel="kvm", tests=["avx512f"])
    assert [r.test for r in rep.advertised_but_faults] == ["avx512f"]
    assert rep.to_json()["results"][0]["verdict"] == "advertised-but-faults"
