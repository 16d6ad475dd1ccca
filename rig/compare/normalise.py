"""Normalising volatile CPUID fields by the rules in ``rig/compare/data/volatile.toml``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ..cpuid.table import REGISTERS, CpuidTable, Regs, fmt_leaf
from ..errors import RigError


class NormaliseError(RigError):
    pass


@dataclass(frozen=True)
class VolatileRule:
    leaf: int
    subleaf: int | None  # None = every subleaf
    reg: str | None      # None = every register
    mask: int            # bits that are volatile
    reason: str

    def covers(self, leaf: int, subleaf: int, reg: str) -> int:
        """Volatile mask this rule puts on (leaf, subleaf, reg); 0 when it does not apply."""
        if leaf != self.leaf or (self.subleaf is not None and subleaf != self.subleaf):
            return 0
        if self.reg is not None and reg != self.reg:
            return 0
        return self.mask

    def describe(self) -> str:
        where = fmt_leaf(self.leaf) + ("" if self.subleaf is None else f".{self.subleaf}")
        if self.reg:
            where += "." + self.reg.upper()
        if self.mask != 0xFFFFFFFF:
            where += f" mask 0x{self.mask:08X}"
        return f"{where}: {self.reason}"


def load_rules(path: str | Path | None = None) -> tuple[VolatileRule, ...]:
    if path is None:
        text = resources.files("rig.compare").joinpath("data/volatile.toml").read_text()
        where = "rig/compare/data/volatile.toml"
    else:
        where = str(path)
        text = Path(path).read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NormaliseError(f"{where}: not valid TOML: {e}") from None
    out = []
    for i, r in enumerate(data.get("rule", [])):
        try:
            reg = r.get("reg")
            if reg is not None and reg not in REGISTERS:
                raise NormaliseError(f"{where}: rule[{i}].reg: {reg!r} is not a register (expected eax, ebx, ecx or edx)")
            mask = int(r.get("mask", 0xFFFFFFFF))
            if not 0 < mask <= 0xFFFFFFFF:
                raise NormaliseError(f"{where}: rule[{i}].mask: expected a non-zero 32-bit mask")
            out.append(VolatileRule(int(r["leaf"]), r.get("subleaf"), reg, mask, str(r["reason"])))
        except KeyError as e:
            raise NormaliseError(f"{where}: rule[{i}]: missing {e.args[0]!r} (expected leaf and reason)") from None
    return tuple(out)


@cache
def default_rules() -> tuple[VolatileRule, ...]:
    return load_rules()


def volatile_mask(leaf: int, subleaf: int, reg: str, rules: tuple[VolatileRule, ...] | None = None) -> int:
    m = 0
    for r in default_rules() if rules is None else rules:
        m |= r.covers(leaf, subleaf, reg)
    return m


def normalise(table: CpuidTable, rules: tuple[VolatileRule, ...] | None = None) -> CpuidTable:
    """A copy of ``table`` with every volatile bit cleared (unknown registers stay unknown)."""
    out = CpuidTable()
    for (leaf, subleaf), regs in table.items():
        vals: dict[str, int | None] = {}
        for reg in REGISTERS:
            v = regs.get(reg)
            vals[reg] = None if v is None else v & ~volatile_mask(leaf, subleaf, reg, rules) & 0xFFFFFFFF
        out.entries[(leaf, subleaf)] = Regs(**vals)
    return out
