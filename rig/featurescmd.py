"""``rig features [PATTERN]``: the feature catalogue, one line per bit (or field).

A pattern is a case-insensitive glob (``avx512*``) or substring matched against
every name a feature has (rig name, kernel ``X86_FEATURE_`` name, /proc/cpuinfo
name, QEMU properties), or a location such as ``0x7.0.EBX`` / ``0x80000021``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json

from .cpuid.catalogue import Catalogue, Feature, Field, catalogue
from .cpuid.table import fmt_leaf
from .errors import RigError


class FeaturesError(RigError):
    pass


def _names(f: Feature) -> list[str]:
    return [n.lower() for n in (f.name, f.kernel or "", f.x86_feature or "", f.cpuinfo or "", *f.qemu) if n]


def _word(leaf: int, subleaf: int, reg: str) -> str:
    return f"{fmt_leaf(leaf, subleaf)}.{reg.upper()}"


def _location_filter(pattern: str) -> tuple[int, int | None, str | None] | None:
    """``0x7.0.EBX`` -> (7, 0, "ebx"); ``0x80000021`` -> (0x80000021, None, None); else None."""
    parts = pattern.split(".")
    if not parts[0].lower().startswith("0x"):
        return None
    try:
        leaf = int(parts[0], 16)
        sub = None
        reg = None
        for p in parts[1:]:
            if p.lower() in ("eax", "ebx", "ecx", "edx"):
                reg = p.lower()
            else:
                sub = int(p, 0)
    except ValueError:
        return None
    return leaf, sub, reg


def select(cat: Catalogue, pattern: str | None) -> tuple[list[Feature], list[Field]]:
    if not pattern:
        return list(cat.features), list(cat.fields)
    loc = _location_filter(pattern)
    if loc is not None:
        leaf, sub, reg = loc

        def at(x: Feature | Field) -> bool:
            return x.leaf == leaf and (sub is None or x.subleaf == sub) and (reg is None or x.reg == reg)

        return [f for f in cat.features if at(f)], [f for f in cat.fields if at(f)]
    pat = pattern.lower()
    glob = any(c in pat for c in "*?[")

    def match(name: str) -> bool:
        return fnmatch.fnmatchcase(name, pat) if glob else pat in name

    feats = [f for f in cat.features if any(match(n) for n in _names(f))]
    fields = [f for f in cat.fields if match(f.name.lower())]
    return feats, fields


def _feature_line(f: Feature) -> str:
    kernel = f.x86_feature or "-"
    word = f.word or "-"
    if f.kvm_only:
        word += " (KVM-only)"
    return (
        f"{_word(f.leaf, f.subleaf, f.reg) + f'[{f.bit}]':<22} {f.name:<24} {kernel:<34} {word:<24} "
        f"{f.cpuinfo or '-':<18} {','.join(f.qemu) or '-'}"
    )


def cmd_features(args: argparse.Namespace) -> int:
    cat = catalogue()
    feats, fields = select(cat, args.pattern)
    if not feats and not fields:
        raise FeaturesError(f"no feature matches {args.pattern!r} (try a shorter pattern, a glob like 'avx512*', or a leaf like 0x7.0.EBX)")
    feats.sort(key=lambda f: (f.leaf, f.subleaf, f.reg, f.bit))
    if args.json:
        print(json.dumps({
            "features": [
                {"name": f.name, "location": str(f.location), "kernel": f.x86_feature, "word": f.word,
                 "kvm_only": f.kvm_only, "cpuinfo": f.cpuinfo, "qemu": list(f.qemu), "desc": f.desc}
                for f in feats
            ],
            "fields": [
                {"name": f.name, "word": _word(f.leaf, f.subleaf, f.reg), "bits": [f.lo, f.hi], "desc": f.desc}
                for f in fields
            ],
        }, indent=2))
        return 0
    if feats:
        print(f"{'bit':<22} {'name':<24} {'kernel':<34} {'kernel word':<24} {'/proc/cpuinfo':<18} qemu")
        for f in feats:
            print(_feature_line(f))
    if fields and not args.features_only:
        if feats:
            print()
        print(f"{'field':<22} {'name':<24} bits    description")
        for fl in fields:
            print(f"{_word(fl.leaf, fl.subleaf, fl.reg):<22} {fl.name:<24} {fl.hi:>2}:{fl.lo:<4} {fl.desc}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features", help="the feature catalogue: bit, kernel name and word, /proc/cpuinfo name, QEMU name",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pattern", nargs="?", help="name, glob or location (e.g. avx512*, tsa, 0x80000021.0.ECX)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--features-only", action="store_true", help="omit multi-bit fields")
    p.set_defaults(func=cmd_features)
