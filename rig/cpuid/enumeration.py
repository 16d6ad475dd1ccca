"""Architectural enumeration of CPUID leaves and subleaves.

Given a function that executes CPUID, :func:`enumerate_cpuid` visits every
leaf of the basic, hypervisor, extended and Centaur ranges and every subleaf of
the leaves whose ECX input matters, following the rules of the Intel SDM and
AMD APM.  The guest probe (``guests/probe``) implements the same rules in C;
``tests/unit/test_enumeration.py`` pins both to this description:

========== =====================================================================
leaf       subleaves visited
========== =====================================================================
0x4        0.. until EAX[4:0] (cache type) == 0 (the terminating subleaf excluded)
0x7        0..7.0.EAX (max subleaf)
0xB, 0x1F  0.. until ECX[15:8] (level type) == 0 (terminating subleaf included)
0xD        0, 1, and every i in 2..63 set in 0.EDX:EAX | 1.EDX:ECX
0xF        0, and every i in 1..31 set in 0.EDX (resource types)
0x10       0, and every i in 1..31 set in 0.EBX (resource types)
0x12       0, 1, and 2.. until EAX[3:0] == 0 (only when 7.0.EBX[2] SGX)
0x14, 0x17, 0x18, 0x1D, 0x1E, 0x20, 0x24
           0..0.EAX (max subleaf)
0x23       0, and every i in 1..31 set in 0.EAX
0x8000001D 0.. until EAX[4:0] == 0 (terminating excluded)
0x80000020 0, and every i in 1..31 set in 0.EBX
0x80000026 0.. until ECX[15:8] == 0 (terminating included)
========== =====================================================================

Every loop is bounded by :data:`MAX_SUBLEAF` so a broken CPU model cannot make
enumeration run away.  Ranges: basic 0..0.EAX; hypervisor 0x40000000..EAX of
0x40000000 when it lies in 0x40000000..0x400000FF; extended
0x80000000..0x80000000.EAX when in 0x80000000..0x800000FF; Centaur
0xC0000000..EAX when in 0xC0000000..0xC00000FF.  Ranges are capped to 0xFF
leaves.
"""

from __future__ import annotations

from collections.abc import Callable

from .table import CpuidTable, Regs

MAX_SUBLEAF = 64
CpuidFn = Callable[[int, int], Regs]

_UP_TO_EAX = {0x7, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x20, 0x24}


def subleaves(leaf: int, cpuid: CpuidFn, sub0: Regs | None = None) -> list[tuple[int, Regs]]:
    """Every (subleaf, regs) visited for ``leaf``."""
    r0 = sub0 if sub0 is not None else cpuid(leaf, 0)
    out = [(0, r0)]

    def walk_until(stop: Callable[[Regs], bool], include_terminator: bool) -> None:
        out.clear()
        for i in range(MAX_SUBLEAF):
            r = r0 if i == 0 else cpuid(leaf, i)
            if stop(r):
                if include_terminator:
                    out.append((i, r))
                return
            out.append((i, r))

    def bits(mask: int, lo: int, hi: int) -> None:
        for i in range(lo, hi + 1):
            if (mask >> i) & 1:
                out.append((i, cpuid(leaf, i)))

    if leaf in (0x4, 0x8000001D):
        walk_until(lambda r: (r.eax or 0) & 0x1F == 0, include_terminator=False)
        if not out:
            out.append((0, r0))
    elif leaf in (0xB, 0x1F, 0x80000026):
        walk_until(lambda r: ((r.ecx or 0) >> 8) & 0xFF == 0, include_terminator=True)
    elif leaf in _UP_TO_EAX:
        top = min(r0.eax or 0, MAX_SUBLEAF - 1)
        for i in range(1, top + 1):
            out.append((i, cpuid(leaf, i)))
    elif leaf == 0xD:
        r1 = cpuid(leaf, 1)
        out.append((1, r1))
        mask = (r0.eax or 0) | ((r0.edx or 0) << 32) | (r1.ecx or 0) | ((r1.edx or 0) << 32)
        for i in range(2, 64):
            if (mask >> i) & 1:
                out.append((i, cpuid(leaf, i)))
    elif leaf == 0xF:
        bits(r0.edx or 0, 1, 31)
    elif leaf in (0x10, 0x80000020):
        bits(r0.ebx or 0, 1, 31)
    elif leaf == 0x23:
        bits(r0.eax or 0, 1, 31)
    elif leaf == 0x12:
        out.append((1, cpuid(leaf, 1)))
        for i in range(2, MAX_SUBLEAF):
            r = cpuid(leaf, i)
            if (r.eax or 0) & 0xF == 0:
                break
            out.append((i, r))
    return out


def _range(base: int, cpuid: CpuidFn, table: CpuidTable, *, sgx: Callable[[], bool]) -> None:
    r0 = cpuid(base, 0)
    top = r0.eax or 0
    if base != 0 and not (base <= top <= base + 0xFF):
        return
    if base == 0:
        top = min(top, 0xFF)
    for leaf in range(base, top + 1):
        r = r0 if leaf == base else cpuid(leaf, 0)
        if leaf == 0x12 and not sgx():
            table.set(leaf, 0, r)
            continue
        for sub, regs in subleaves(leaf, cpuid, r):
            table.set(leaf, sub, regs)


def enumerate_cpuid(cpuid: CpuidFn, *, centaur: bool | None = None) -> CpuidTable:
    """Enumerate all leaves/subleaves with ``cpuid`` (a function (leaf, subleaf) -> Regs)."""
    t = CpuidTable()
    _range(0, cpuid, t, sgx=lambda: bool((t.value(7, 0, "ebx") >> 2) & 1))
    _range(0x40000000, cpuid, t, sgx=lambda: False)
    _range(0x80000000, cpuid, t, sgx=lambda: False)
    if centaur is None:
        centaur = (t.vendor or "") in ("CentaurHauls", "  Shanghai  ")
    if centaur:
        _range(0xC0000000, cpuid, t, sgx=lambda: False)
    return t
