"""`rig features`: listing and filtering the catalogue (facts: kernel cpufeatures.h / reverse_cpuid.h)."""

import json

from rig.cli import main


def _run(capsys, *argv):
    rc = main(["features", *argv])
    return rc, capsys.readouterr()


def test_pattern_finds_the_tsa_bits_at_their_kernel_positions(capsys):
    rc, out = _run(capsys, "--json", "tsa")
    assert rc == 0
    got = {f["kernel"]: f["location"] for f in json.loads(out.out)["features"]}
    # reverse_cpuid.h: TSA_SQ_NO / TSA_L1_NO are CPUID 0x80000021 ECX bits 1 and 2 (KVM-only word)
    assert got == {"X86_FEATURE_TSA_SQ_NO": "0x80000021.ECX[1]", "X86_FEATURE_TSA_L1_NO": "0x80000021.ECX[2]"}


def test_location_filter_lists_one_word(capsys):
    rc, out = _run(capsys, "--json", "0x7.0.EBX")
    assert rc == 0
    feats = json.loads(out.out)["features"]
    assert {f["location"].split("[")[0] for f in feats} == {"0x7.0.EBX"}
    assert any(f["name"] == "avx2" and f["location"] == "0x7.0.EBX[5]" for f in feats)


def test_glob_matches_qemu_and_cpuinfo_names(capsys):
    rc, out = _run(capsys, "--json", "sse4*")
    names = {f["name"] for f in json.loads(out.out)["features"]}
    assert {"sse4_1", "sse4_2"} <= names  # cpuinfo names; QEMU calls them sse4.1/sse4.2


def test_table_output_has_header_and_columns(capsys):
    rc, out = _run(capsys, "avx2")
    lines = out.out.splitlines()
    assert lines[0].split()[:3] == ["bit", "name", "kernel"]
    assert any("0x7.0.EBX[5]" in line and "X86_FEATURE_AVX2" in line for line in lines)


def test_no_match_is_a_one_line_error(capsys):
    rc, out = _run(capsys, "no-such-feature-xyz")
    assert rc != 0
    assert out.err.count("\n") == 1 and "no feature matches" in out.err
