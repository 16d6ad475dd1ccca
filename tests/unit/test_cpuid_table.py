import json

import pytest

from rig.cpuid.table import CpuidFormatError, CpuidTable, Location, Regs, normalise_key


def table(*rows):
    return CpuidTable.from_items(rows)


def test_non_subleaf_leaves_are_stored_under_subleaf_zero():
    t = table((1, 5, 1, 2, 3, 4))
    assert t.get(1, 0) == Regs(1, 2, 3, 4)
    assert t.get(1, 7) == Regs(1, 2, 3, 4)  # ECX is ignored for leaf 1
    assert normalise_key(7, 1) == (7, 1)
    assert t.get(7, 1) is None


def test_diff_reports_each_bit_with_its_location():
    a = table((1, 0, 0, 0, 0b101, 0), (7, 0, 0, 0x20, 0, 0))
    b = table((1, 0, 0, 0, 0b100, 0), (7, 0, 0, 0x00, 0, 0), (7, 1, 0, 0, 0, 1))
    diffs = {(str(d.location), d.a, d.b) for d in a.diff(b)}
    assert diffs == {("0x1.ECX[0]", 1, 0), ("0x7.0.EBX[5]", 1, 0), ("0x7.1.EDX[0]", 0, 1)}


def test_diff_skips_unknown_registers():
    a = CpuidTable()
    a.set_reg(7, 0, "ebx", 0xFF)
    b = table((7, 0, 0xFFFF, 0xFF, 0xFFFF, 0xFFFF))
    assert a.diff(b) == []  # eax/ecx/edx unknown on the left


def test_diff_missing_leaf_counts_as_zero_only_when_asked():
    a = table((0x80000021, 0, 0, 0, 0b110, 0))
    b = CpuidTable()
    assert len(a.diff(b)) == 2
    assert a.diff(b, missing_as_zero=False) == []


def test_json_round_trip_keeps_partial_registers():
    t = table((0, 0, 0x10, 0x68747541, 0x444D4163, 0x69746E65), (0xD, 1, 0xF, None, None, None))
    back = CpuidTable.from_json(json.loads(t.dumps()))
    assert back == t
    assert back.get(0xD, 1).ebx is None
    assert back.vendor == "AuthenticAMD"


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"format": "other/1", "entries": []}, "unsupported format"),
        ({"entries": {}}, "must be a list"),
        ({"entries": [{"subleaf": 0}]}, "entry 0 has no 'leaf'"),
        ({"entries": [{"leaf": "0x1", "eax": "zz"}]}, "is not an integer"),
        ({"entries": [{"leaf": "0x1", "eax": "0x100000000"}]}, "out of 32-bit range"),
    ],
)
def test_malformed_json_is_named(doc, message):
    with pytest.raises(CpuidFormatError, match=message):
        CpuidTable.from_json(doc, "t.json")


def test_load_names_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(CpuidFormatError, match="broken.json: not JSON"):
        CpuidTable.load(p)


def test_masked_keeps_only_mask_registers():
    t = table((1, 0, 0xAAAA, 0xBBBB, 0xFF, 0xF0))
    m = CpuidTable()
    m.set_reg(1, 0, "ecx", 0x0F)
    out = t.masked(m)
    assert out.get(1, 0) == Regs(None, None, 0x0F, None)


def test_location_text():
    assert str(Location(0x80000021, 0, "ecx", 1)) == "0x80000021.ECX[1]"
    assert str(Location(7, 1, "eax", 4)) == "0x7.1.EAX[4]"
