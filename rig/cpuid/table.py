"""CPUID tables: (leaf, subleaf) -> eax/ebx/ecx/edx, with bit-level diff and JSON.

A :class:`CpuidTable` is the one value type every layer of the rig speaks: the
host's raw CPUID, ``KVM_GET_SUPPORTED_CPUID``, QEMU's configured
``feature-words`` and what the guest probe read are all tables.

Registers may be ``None`` (unknown).  That is how partial sources are
represented: QMP ``feature-words`` only covers feature registers, libvirt's
``-enabled.xml`` only named bits.  Comparisons skip unknown registers.

Leaves whose subleaf (ECX input) is significant are listed in
:data:`SUBLEAF_LEAVES`; for every other leaf the table stores subleaf 0 only,
so a ``cpuid -r`` dump (which prints every leaf for ECX=0) and a KVM buffer
(which marks significant-index leaves with a flag) normalise to the same keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RigError

REGISTERS: tuple[str, ...] = ("eax", "ebx", "ecx", "edx")

#: Leaves whose ECX input selects a subleaf (Intel SDM vol. 2A CPUID, AMD APM
#: vol. 3 appendix E).  Everything else is indexed by subleaf 0 only.
SUBLEAF_LEAVES: frozenset[int] = frozenset(
    {
        0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E,
        0x1F, 0x20, 0x23, 0x24,
        0x8000001D, 0x80000020, 0x80000026,
    }
)

FORMAT = "rig-cpuid/1"


class CpuidFormatError(RigError, ValueError):
    """A CPUID table or dump could not be read; the message says where and why."""


def has_subleaves(leaf: int) -> bool:
    return leaf in SUBLEAF_LEAVES


def normalise_key(leaf: int, subleaf: int) -> tuple[int, int]:
    """The key a (leaf, subleaf) pair is stored under."""
    return (leaf, subleaf if leaf in SUBLEAF_LEAVES else 0)


@dataclass(frozen=True, slots=True)
class Regs:
    """Four CPUID output registers; ``None`` means not known."""

    eax: int | None = None
    ebx: int | None = None
    ecx: int | None = None
    edx: int | None = None

    def get(self, reg: str) -> int | None:
        return getattr(self, reg)

    def replace(self, **values: int | None) -> Regs:
        d = {r: getattr(self, r) for r in REGISTERS}
        d.update(values)
        return Regs(**d)

    def as_tuple(self) -> tuple[int | None, int | None, int | None, int | None]:
        return (self.eax, self.ebx, self.ecx, self.edx)


@dataclass(frozen=True, slots=True)
class Location:
    """One bit position: leaf.subleaf.register[bit]."""

    leaf: int
    subleaf: int
    reg: str
    bit: int

    def __str__(self) -> str:
        return f"{fmt_leaf(self.leaf, self.subleaf)}.{self.reg.upper()}[{self.bit}]"


@dataclass(frozen=True, slots=True)
class BitDiff:
    """One bit that differs between table ``a`` and table ``b``."""

    location: Location
    a: int  # 0 or 1
    b: int

    @property
    def only_in(self) -> str:
        return "a" if self.a else "b"


def fmt_leaf(leaf: int, subleaf: int | None = None) -> str:
    s = f"0x{leaf:X}" if leaf < 0x100 else f"0x{leaf:08X}"
    if subleaf is not None and leaf in SUBLEAF_LEAVES:
        s += f".{subleaf}"
    return s


def parse_int(text: str | int, what: str = "value") -> int:
    if isinstance(text, int):
        return text
    try:
        return int(str(text).strip(), 0)
    except ValueError:
        raise CpuidFormatError(f"{what}: {text!r} is not an integer") from None


def u32(value: int, what: str = "value") -> int:
    """``value`` if it fits a 32-bit register (CPUID inputs and outputs all do), else :class:`CpuidFormatError`."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise CpuidFormatError(f"{what}: {value:#x} out of 32-bit range")
    return value


@dataclass
class CpuidTable:
    """Mapping of (leaf, subleaf) to :class:`Regs`.

    ``entries`` is keyed by normalised keys (see :func:`normalise_key`).
    """

    entries: dict[tuple[int, int], Regs] = field(default_factory=dict)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_items(
        cls, items: Iterable[tuple[int, int, int | None, int | None, int | None, int | None]]
    ) -> CpuidTable:
        t = cls()
        for leaf, subleaf, a, b, c, d in items:
            t.set(leaf, subleaf, Regs(a, b, c, d))
        return t

    def set(self, leaf: int, subleaf: int, regs: Regs) -> None:
        self.entries[normalise_key(leaf, subleaf)] = regs

    def set_reg(self, leaf: int, subleaf: int, reg: str, value: int) -> None:
        key = normalise_key(leaf, subleaf)
        old = self.entries.get(key, Regs())
        self.entries[key] = old.replace(**{reg: value & 0xFFFFFFFF})

    def copy(self) -> CpuidTable:
        return CpuidTable(dict(self.entries))

    # -- access -------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return normalise_key(*key) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(sorted(self.entries))

    def get(self, leaf: int, subleaf: int = 0) -> Regs | None:
        return self.entries.get(normalise_key(leaf, subleaf))

    def reg(self, leaf: int, subleaf: int, reg: str) -> int | None:
        r = self.get(leaf, subleaf)
        return None if r is None else r.get(reg)

    def value(self, leaf: int, subleaf: int, reg: str) -> int:
        """Register value, 0 when absent (what the CPU returns for an absent leaf, roughly)."""
        v = self.reg(leaf, subleaf, reg)
        return 0 if v is None else v

    def bit(self, leaf: int, subleaf: int, reg: str, bit: int) -> int | None:
        v = self.reg(leaf, subleaf, reg)
        return None if v is None else (v >> bit) & 1

    def subleaves(self, leaf: int) -> list[int]:
        return sorted(s for (lf, s) in self.entries if lf == leaf)

    def leaves(self) -> list[int]:
        return sorted({lf for (lf, _s) in self.entries})

    def items(self) -> list[tuple[tuple[int, int], Regs]]:
        return sorted(self.entries.items())

    @property
    def max_basic(self) -> int:
        return self.value(0, 0, "eax")

    @property
    def max_extended(self) -> int:
        return self.value(0x80000000, 0, "eax")

    @property
    def vendor(self) -> str | None:
        r = self.get(0, 0)
        if r is None or None in (r.ebx, r.edx, r.ecx):
            return None
        raw = b"".join(int(x).to_bytes(4, "little") for x in (r.ebx, r.edx, r.ecx))
        return raw.decode("latin-1")

    def masked(self, mask: CpuidTable) -> CpuidTable:
        """Only the registers ``mask`` knows, AND-ed with ``mask`` (feature-bit view)."""
        out = CpuidTable()
        for key, m in mask.entries.items():
            r = self.entries.get(key, Regs(0, 0, 0, 0))
            vals = {}
            for reg in REGISTERS:
                mv, rv = m.get(reg), r.get(reg)
                if mv is None:
                    continue
                vals[reg] = (rv or 0) & mv
            out.entries[key] = Regs(**vals)
        return out

    # -- comparison ---------------------------------------------------------
    def diff(self, other: CpuidTable, *, missing_as_zero: bool = True) -> list[BitDiff]:
        """Bit-level differences with ``other``.

        Registers unknown (``None``) on either side are skipped.  A leaf present
        on one side only is compared against zeros when ``missing_as_zero``
        (a guest reading an absent leaf gets zeros on AMD), else skipped.
        """
        out: list[BitDiff] = []
        for key in sorted(set(self.entries) | set(other.entries)):
            ra, rb = self.entries.get(key), other.entries.get(key)
            if (ra is None or rb is None) and not missing_as_zero:
                continue
            ra = ra or Regs(0, 0, 0, 0)
            rb = rb or Regs(0, 0, 0, 0)
            for reg in REGISTERS:
                va, vb = ra.get(reg), rb.get(reg)
                if va is None or vb is None or va == vb:
                    continue
                x = va ^ vb
                while x:
                    low = x & -x
                    bit = low.bit_length() - 1
                    out.append(BitDiff(Location(key[0], key[1], reg, bit), (va >> bit) & 1, (vb >> bit) & 1))
                    x ^= low
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CpuidTable):
            return NotImplemented
        return self.entries == other.entries

    # -- JSON ---------------------------------------------------------------
    def to_json(self) -> dict:
        rows = []
        for (leaf, subleaf), r in self.items():
            row: dict[str, object] = {"leaf": f"0x{leaf:08x}", "subleaf": subleaf}
            for reg in REGISTERS:
                v = r.get(reg)
                if v is not None:
                    row[reg] = f"0x{v:08x}"
            rows.append(row)
        return {"format": FORMAT, "entries": rows}

    @classmethod
    def from_json(cls, data: Mapping | list, where: str = "table") -> CpuidTable:
        if isinstance(data, Mapping):
            fmt = data.get("format")
            if fmt is not None and fmt != FORMAT:
                raise CpuidFormatError(f"{where}: unsupported format {fmt!r} (expected {FORMAT!r})")
            rows = data.get("entries")
        else:
            rows = data
        if not isinstance(rows, list):
            raise CpuidFormatError(f"{where}: 'entries' must be a list")
        t = cls()
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or "leaf" not in row:
                raise CpuidFormatError(f"{where}: entry {i} has no 'leaf'")
            leaf = u32(parse_int(row["leaf"], f"{where}: entry {i} leaf"), f"{where}: entry {i} leaf")
            subleaf = u32(parse_int(row.get("subleaf", 0), f"{where}: entry {i} subleaf"), f"{where}: entry {i} subleaf")
            vals = {}
            for reg in REGISTERS:
                if reg in row and row[reg] is not None:
                    vals[reg] = u32(parse_int(row[reg], f"{where}: entry {i} {reg}"), f"{where}: entry {i} {reg}")
            t.set(leaf, subleaf, Regs(**vals))
        return t

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> CpuidTable:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as e:
            raise CpuidFormatError(f"{p}: cannot read: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise CpuidFormatError(f"{p}: not JSON: {e.msg} at line {e.lineno}") from None
        return cls.from_json(data, str(p))

    def format_text(self) -> str:
        """``cpuid -r``-like text, one line per entry."""
        lines = []
        for (leaf, subleaf), r in self.items():
            regs = " ".join(
                f"{reg}=0x{v:08x}" if (v := r.get(reg)) is not None else f"{reg}=?" for reg in REGISTERS
            )
            lines.append(f"   0x{leaf:08x} 0x{subleaf:02x}: {regs}")
        return "\n".join(lines)
