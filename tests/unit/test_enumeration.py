"""The enumeration rules, driven by CPUID tables of real CPUs (libvirt cputestdata) and this host."""

import shutil
import subprocess

import pytest

from rig.cpuid.enumeration import enumerate_cpuid, subleaves
from rig.cpuid.parse import parse_cpudata_xml, parse_cpuid_r
from rig.cpuid.table import CpuidTable, Regs


def as_cpuid(t: CpuidTable):
    def fn(leaf, sub):
        r = t.get(leaf, sub)
        return r if r is not None else Regs(0, 0, 0, 0)
    return fn


def test_leaf7_visits_up_to_max_subleaf():
    t = CpuidTable.from_items([(7, 0, 2, 1, 1, 1), (7, 1, 5, 0, 0, 0), (7, 2, 0, 0, 0, 9), (7, 3, 7, 7, 7, 7)])
    got = [s for s, _ in subleaves(7, as_cpuid(t))]
    assert got == [0, 1, 2]


def test_topology_leaf_includes_terminating_subleaf():
    t = CpuidTable.from_items([(0xB, 0, 1, 2, 0x100, 0), (0xB, 1, 4, 8, 0x201, 0), (0xB, 2, 0, 0, 2, 0)])
    assert [s for s, _ in subleaves(0xB, as_cpuid(t))] == [0, 1, 2]


def test_cache_leaf_stops_before_null_type():
    t = CpuidTable.from_items([(4, 0, 0x121, 0, 0, 0), (4, 1, 0x122, 0, 0, 0), (4, 2, 0, 0, 0, 0)])
    assert [s for s, _ in subleaves(4, as_cpuid(t))] == [0, 1]


def test_xsave_leaf_follows_supported_components():
    # XCR0 = x87|SSE|AVX|PKRU(9), XSS = CET_U(11)
    t = CpuidTable.from_items([(0xD, 0, 0x207, 0, 0, 0), (0xD, 1, 0xF, 0, 0x800, 0)])
    assert [s for s, _ in subleaves(0xD, as_cpuid(t))] == [0, 1, 2, 9, 11]


def test_bounded_on_garbage():
    def fn(leaf, sub):  # claims a huge max subleaf and endless topology levels
        return Regs(0xFFFFFFFF, 1, 0x1FF, 0)
    assert len(subleaves(7, fn)) == 64
    assert len(subleaves(0xB, fn)) == 64


def test_enumerating_a_real_dump_reproduces_it(libvirt_data):
    """Replaying a real CPU's libvirt dump through the rules visits exactly the dump's subleaves
    for the leaves where libvirt's own collector follows the same architectural rules."""
    for name, leaves in (
        # the 7713 dump lacks 0x80000020.1 although 0.EBX[1] announces it (libvirt's collector, not the CPU)
        ("EPYC-7713-64-Core", (0x7, 0xD, 0xF, 0x10, 0x8000001D)),
        ("EPYC-9334-32-Core", (0x7, 0xD, 0xF, 0x10, 0x8000001D, 0x80000020)),
    ):
        raw = parse_cpudata_xml((libvirt_data / f"x86_64-cpuid-{name}.xml").read_text())
        t = enumerate_cpuid(as_cpuid(raw))
        for leaf in leaves:
            assert t.subleaves(leaf) == raw.subleaves(leaf), (name, hex(leaf))
        assert t.max_extended == raw.max_extended


@pytest.mark.skipif(shutil.which("cpuid") is None, reason="the cpuid tool is not installed (scripts/setup.sh)")
def test_enumeration_on_this_host_matches_the_cpuid_tool():
    """Independent source of truth: Todd Allen's `cpuid -1 -r` on this CPU."""
    from rig.host.cpuid_exec import CpuidExecutor

    ours = enumerate_cpuid(CpuidExecutor.open())
    theirs = parse_cpuid_r(subprocess.run(["cpuid", "-1", "-r"], capture_output=True, text=True, check=True).stdout)
    common = set(ours.entries) & set(theirs.entries)
    assert len(common) >= 20
    volatile = {(1, "ebx"), (0xB, "edx"), (0x1F, "edx"), (0x8000001E, "eax"), (0x8000001E, "ebx")}
    for key in common:
        for reg in ("eax", "ebx", "ecx", "edx"):
            if (key[0], reg) in volatile:
                continue
            assert ours.reg(*key, reg) == theirs.reg(*key, reg), (hex(key[0]), key[1], reg)
    # every leaf the tool lists within the architectural ranges is visited by us
    for leaf, sub in theirs.entries:
        if leaf <= ours.max_basic or 0x80000000 <= leaf <= ours.max_extended:
            if leaf in (0x4, 0x8000001D) and (theirs.value(leaf, sub, "eax") & 0x1F) == 0:
                continue  # the tool prints the null terminator; we stop before it
            if sub != 0 and theirs.get(leaf, sub) == Regs(0, 0, 0, 0):
                continue  # the tool probes some subleaves beyond the architectural end
            assert (leaf, sub) in ours.entries, (hex(leaf), sub)
