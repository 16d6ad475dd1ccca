import struct

import pytest

from rig.cpuid.parse import (
    parse_cpudata_xml,
    parse_cpuid_r,
    parse_feature_words,
    parse_kvm_cpuid2,
)
from rig.cpuid.table import CpuidFormatError

CPUID_R = """\
CPU 0:
   0x00000000 0x00: eax=0x00000010 ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65
   0x00000001 0x00: eax=0x00a00f11 ebx=0x00800800 ecx=0x7efa320b edx=0x178bfbff
   0x00000007 0x00: eax=0x00000000 ebx=0x219c97a9 ecx=0x0040069c edx=0x00000010
   0x00000007 0x01: eax=0x00000000 ebx=0x00000000 ecx=0x00000000 edx=0x00000000
   0x00000001 0x01: eax=0x00a00f11 ebx=0x00800800 ecx=0x7efa320b edx=0x178bfbff
CPU 1:
   0x00000000 0x00: eax=0x00000010 ebx=0x68747541 ecx=0x444d4163 edx=0x69746e65
   0x00000001 0x00: eax=0x00a00f11 ebx=0x01800800 ecx=0x7efa320b edx=0x178bfbff
"""


def test_cpuid_r_takes_cpu0_and_normalises_subleaves():
    t = parse_cpuid_r(CPUID_R)
    assert t.vendor == "AuthenticAMD"
    assert t.value(7, 0, "ebx") == 0x219C97A9
    assert (7, 1) in t.entries
    assert (1, 1) not in t.entries  # leaf 1 has no subleaves
    assert t.value(1, 0, "ebx") == 0x00800800
    assert parse_cpuid_r(CPUID_R, cpu=1).value(1, 0, "ebx") == 0x01800800


def test_cpuid_1_r_without_cpu_number():
    t = parse_cpuid_r("CPU:\n   0x00000000 0x00: eax=0x00000001 ebx=0x1 ecx=0x2 edx=0x3\n")
    assert t.max_basic == 1


def test_cpuid_r_errors_name_the_problem():
    with pytest.raises(CpuidFormatError, match="no CPUID entries"):
        parse_cpuid_r("hello\n")
    with pytest.raises(CpuidFormatError, match="line 2: malformed"):
        parse_cpuid_r("CPU 0:\n   0x00000000 0x00: eax=0x1 ebx=\n")
    with pytest.raises(CpuidFormatError, match="no CPU 3"):
        parse_cpuid_r(CPUID_R, cpu=3)


def _kvm_buf(entries):
    body = b"".join(struct.pack("<10I", *e, 0, 0, 0) for e in entries)
    return struct.pack("<II", len(entries), 0) + body


def test_kvm_cpuid2_buffer_uses_significant_index_flag():
    buf = _kvm_buf([(0, 0, 0, 0x1F, 1, 2, 3), (7, 0, 1, 1, 0xAA, 0, 0), (7, 1, 1, 0x10, 0, 0, 0)])
    t = parse_kvm_cpuid2(buf)
    assert t.max_basic == 0x1F
    assert t.value(7, 0, "ebx") == 0xAA
    assert t.value(7, 1, "eax") == 0x10


def test_kvm_cpuid2_short_buffer():
    with pytest.raises(CpuidFormatError, match="fewer than"):
        parse_kvm_cpuid2(struct.pack("<II", 3, 0))


def test_feature_words():
    words = [
        {"cpuid-input-eax": 1, "cpuid-register": "ECX", "features": 0x80000001},
        {"cpuid-input-eax": 7, "cpuid-input-ecx": 0, "cpuid-register": "EBX", "features": 0x20},
        {"cpuid-input-eax": 7, "cpuid-input-ecx": 1, "cpuid-register": "EAX", "features": 0x10},
    ]
    t = parse_feature_words(words)
    assert t.value(1, 0, "ecx") == 0x80000001
    assert t.get(1, 0).edx is None
    assert t.value(7, 1, "eax") == 0x10
    with pytest.raises(CpuidFormatError, match="item 0 malformed"):
        parse_feature_words([{"cpuid-register": "EAX"}])


def test_cpudata_xml():
    xml = """<!-- AMD Test -->
<cpudata arch='x86'>
  <cpuid eax_in='0x00000007' ecx_in='0x00' eax='0x00000000' ebx='0x219c97a9' ecx='0x0040069c' edx='0x00000010'/>
  <msr index='0x10a' edx='0x00000000' eax='0x00000069'/>
</cpudata>"""
    t = parse_cpudata_xml(xml)
    assert t.value(7, 0, "ebx") == 0x219C97A9
    with pytest.raises(CpuidFormatError, match="root element"):
        parse_cpudata_xml("<foo/>")
    with pytest.raises(CpuidFormatError, match="not XML"):
        parse_cpudata_xml("<cpudata")
