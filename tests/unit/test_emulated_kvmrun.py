"""The kvmrun L2 case's views on an emulated host (rig/run/emulated.py): its scope is the feature registers."""

from __future__ import annotations

from rig.cpuid.catalogue import catalogue
from rig.cpuid.table import CpuidTable
from rig.emulate.l2 import feature_registers


def test_feature_registers_keep_the_catalogues_words_only():
    t = CpuidTable()
    t.set_reg(0x80000021, 0, "ecx", 0x6)        # TSA_SQ_NO | TSA_L1_NO: a feature register
    t.set_reg(0x80000021, 0, "ebx", 0x1234)     # not a feature register (sizes and counts)
    t.set_reg(0xD, 0, "ebx", 0x240)             # XSAVE area size: runtime, not a feature
    t.set_reg(1, 0, "ecx", 0x80000000)
    out = feature_registers(t)
    assert out.reg(0x80000021, 0, "ecx") == 0x6 and out.reg(1, 0, "ecx") == 0x80000000
    assert out.reg(0x80000021, 0, "ebx") is None and out.reg(0xD, 0, "ebx") is None
    words = set(catalogue().words())
    assert all((lf, s, r) in words for (lf, s), regs in out.items() for r in ("eax", "ebx", "ecx", "edx")
               if regs.get(r) is not None)
    assert feature_registers(None) is None
