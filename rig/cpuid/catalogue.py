"""The feature catalogue: every named CPUID feature bit and multi-bit field.

The data lives in ``rig/cpuid/data/features.toml`` (one ``[[feature]]`` per
bit, one ``[[field]]`` per multi-bit field); this module only loads and
indexes it.  Schema of a feature::

    [[feature]]
    name    = "pni"                 # rig's canonical name (see below)
    leaf    = 0x1
    subleaf = 0                     # optional, default 0
    reg     = "ecx"
    bit     = 0
    kernel  = "XMM3"                # X86_FEATURE_ suffix, if the kernel names it
    word    = "CPUID_1_ECX"         # kernel word (enum cpuid_leafs) or KVM-only word
    kvm_only = false                # true when `word` is a KVM-only word (reverse_cpuid.h)
    cpuinfo = "pni"                 # /proc/cpuinfo name, if the kernel shows one
    qemu    = ["pni", "sse3"]       # QEMU property names (first = QEMU's canonical)
    desc    = "SSE3"

The canonical ``name`` is the /proc/cpuinfo name when there is one, else
QEMU's canonical name, else the lower-cased kernel name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import RigError
from .table import REGISTERS, Location, fmt_leaf


class CatalogueError(RigError, ValueError):
    pass


@dataclass(frozen=True)
class Feature:
    name: str
    leaf: int
    subleaf: int
    reg: str
    bit: int
    kernel: str | None = None
    word: str | None = None
    kvm_only: bool = False
    cpuinfo: str | None = None
    qemu: tuple[str, ...] = ()
    desc: str = ""

    @property
    def location(self) -> Location:
        return Location(self.leaf, self.subleaf, self.reg, self.bit)

    @property
    def mask(self) -> int:
        return 1 << self.bit

    @property
    def x86_feature(self) -> str | None:
        """The kernel macro: ``X86_FEATURE_<kernel>``, or ``kernel`` itself for the
        paravirtual bits of leaf 0x4000_0001 (``KVM_FEATURE_*``/``KVM_HINTS_*``)."""
        if not self.kernel:
            return None
        return self.kernel if self.kernel.startswith("KVM_") else f"X86_FEATURE_{self.kernel}"

    def where(self) -> str:
        return str(self.location)


@dataclass(frozen=True)
class Field:
    name: str
    leaf: int
    subleaf: int
    reg: str
    lo: int
    hi: int
    desc: str = ""

    @property
    def mask(self) -> int:
        return ((1 << (self.hi - self.lo + 1)) - 1) << self.lo

    def extract(self, value: int) -> int:
        return (value & self.mask) >> self.lo


@dataclass
class Catalogue:
    features: list[Feature]
    fields: list[Field]
    _by_loc: dict[tuple[int, int, str, int], Feature] = field(default_factory=dict, repr=False)
    _by_name: dict[str, Feature] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for f in self.features:
            key = (f.leaf, f.subleaf, f.reg, f.bit)
            if key in self._by_loc:
                raise CatalogueError(f"duplicate bit {f.where()}: {self._by_loc[key].name} and {f.name}")
            self._by_loc[key] = f
        # names: canonical first, then aliases, never overriding a canonical name
        for f in self.features:
            if f.name in self._by_name:
                raise CatalogueError(f"duplicate feature name {f.name!r}")
            self._by_name[f.name] = f
        for f in self.features:
            aliases = [*(f.qemu or ()), f.cpuinfo or "", f.kernel or "", f.x86_feature or ""]
            for alias in aliases:
                for a in {alias, alias.lower(), alias.replace("_", "-").lower(), alias.replace("-", "_").lower()}:
                    if a and a not in self._by_name:
                        self._by_name[a] = f

    # -- lookups ------------------------------------------------------------
    def by_location(self, leaf: int, subleaf: int, reg: str, bit: int) -> Feature | None:
        return self._by_loc.get((leaf, subleaf, reg, bit))

    def lookup(self, name: str) -> Feature | None:
        n = name.strip()
        for cand in (n, n.lower(), n.lower().replace("-", "_"), n.lower().replace("_", "-")):
            if cand in self._by_name:
                return self._by_name[cand]
        if n.upper().startswith("X86_FEATURE_"):
            return self.lookup(n[len("X86_FEATURE_"):])
        return None

    def get(self, name: str) -> Feature:
        f = self.lookup(name)
        if f is None:
            raise CatalogueError(f"unknown feature {name!r} (try `rig features` for the list)")
        return f

    def by_cpuinfo(self, name: str) -> Feature | None:
        for f in self.features:
            if f.cpuinfo == name:
                return f
        return None

    def by_qemu(self, name: str) -> Feature | None:
        for f in self.features:
            if name in f.qemu:
                return f
        return None

    def by_kernel(self, name: str) -> Feature | None:
        name = name.removeprefix("X86_FEATURE_")
        for f in self.features:
            if f.kernel == name:
                return f
        return None

    def in_word(self, leaf: int, subleaf: int, reg: str) -> list[Feature]:
        return sorted(
            (f for f in self.features if (f.leaf, f.subleaf, f.reg) == (leaf, subleaf, reg)), key=lambda f: f.bit
        )

    def words(self) -> list[tuple[int, int, str]]:
        return sorted({(f.leaf, f.subleaf, f.reg) for f in self.features})

    def name_of(self, leaf: int, subleaf: int, reg: str, bit: int) -> str:
        f = self.by_location(leaf, subleaf, reg, bit)
        return f.name if f else f"{fmt_leaf(leaf, subleaf)}.{reg.upper()}[{bit}]"

    def field(self, name: str) -> Field:
        for fl in self.fields:
            if fl.name == name:
                return fl
        raise CatalogueError(f"unknown field {name!r}")


def _load_feature(d: dict, i: int, where: str) -> Feature:
    try:
        reg = d["reg"].lower()
        if reg not in REGISTERS:
            raise CatalogueError(f"{where}: feature {i} ({d.get('name')}): bad register {d['reg']!r}")
        bit = int(d["bit"])
        if not 0 <= bit < 32:
            raise CatalogueError(f"{where}: feature {i} ({d.get('name')}): bit {bit} out of range")
        qemu = d.get("qemu", ())
        if isinstance(qemu, str):
            qemu = (qemu,)
        return Feature(
            name=d["name"],
            leaf=int(d["leaf"]),
            subleaf=int(d.get("subleaf", 0)),
            reg=reg,
            bit=bit,
            kernel=d.get("kernel"),
            word=d.get("word"),
            kvm_only=bool(d.get("kvm_only", False)),
            cpuinfo=d.get("cpuinfo"),
            qemu=tuple(qemu),
            desc=d.get("desc", ""),
        )
    except KeyError as e:
        raise CatalogueError(f"{where}: feature {i} lacks {e.args[0]!r}") from None


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    if path is None:
        text = resources.files("rig.cpuid").joinpath("data/features.toml").read_text()
        where = "rig/cpuid/data/features.toml"
    else:
        text = Path(path).read_text()
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogueError(f"{where}: {e}") from None
    feats = [_load_feature(d, i, where) for i, d in enumerate(data.get("feature", []))]
    fields = [
        Field(
            name=d["name"], leaf=int(d["leaf"]), subleaf=int(d.get("subleaf", 0)), reg=d["reg"].lower(),
            lo=int(d["lo"]), hi=int(d["hi"]), desc=d.get("desc", ""),
        )
        for d in data.get("field", [])
    ]
    return Catalogue(feats, fields)


@cache
def catalogue() -> Catalogue:
    """The packaged catalogue (loaded once; immutable in use)."""
    return load_catalogue()
