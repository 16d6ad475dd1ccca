"""``rig diff A B``: bit-level differences between two CPUID tables, with feature names."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from .cpuid.catalogue import Catalogue, catalogue
from .cpuid.table import BitDiff, CpuidTable
from .host.layers import load_table, parse_ref


@dataclass(frozen=True)
class NamedDiff:
    diff: BitDiff
    name: str
    kind: str  # "feature" | "field" | "bit"

    def to_json(self) -> dict:
        loc = self.diff.location
        return {
            "name": self.name, "kind": self.kind, "location": str(loc), "leaf": loc.leaf, "subleaf": loc.subleaf,
            "reg": loc.reg, "bit": loc.bit, "a": self.diff.a, "b": self.diff.b,
        }


def name_diffs(diffs: list[BitDiff], cat: Catalogue) -> list[NamedDiff]:
    out = []
    for d in diffs:
        loc = d.location
        f = cat.by_location(loc.leaf, loc.subleaf, loc.reg, loc.bit)
        if f is not None:
            out.append(NamedDiff(d, f.name, "feature"))
            continue
        fld = next(
            (x for x in cat.fields if (x.leaf, x.subleaf, x.reg) == (loc.leaf, loc.subleaf, loc.reg)
             and x.lo <= loc.bit <= x.hi),
            None,
        )
        out.append(NamedDiff(d, f"{fld.name}[{loc.bit - fld.lo}]" if fld else str(loc), "field" if fld else "bit"))
    return out


def diff_tables(a: CpuidTable, b: CpuidTable, *, all_bits: bool = False, cat: Catalogue | None = None) -> list[NamedDiff]:
    cat = cat or catalogue()
    named = name_diffs(a.diff(b), cat)
    return named if all_bits else [n for n in named if n.kind == "feature"]


def format_diffs(named: list[NamedDiff], label_a: str, label_b: str) -> str:
    lines = [f"A = {label_a}", f"B = {label_b}"]
    width = max((len(str(n.diff.location)) for n in named), default=10)
    for n in named:
        where = "only in A" if n.diff.a else "only in B"
        lines.append(f"  {str(n.diff.location):<{width}}  {n.name:<24} {where}")
    only_a = sum(1 for n in named if n.diff.a)
    lines.append(f"{len(named)} bit(s) differ: {only_a} only in A, {len(named) - only_a} only in B")
    return "\n".join(lines)


def cmd_diff(args: argparse.Namespace) -> int:
    ra, rb = parse_ref(args.a), parse_ref(args.b)
    ta, tb = load_table(ra), load_table(rb)
    named = diff_tables(ta, tb, all_bits=args.all_bits)
    if args.json:
        print(json.dumps({"a": str(ra), "b": str(rb), "differences": [n.to_json() for n in named]}, indent=1))
    else:
        print(format_diffs(named, str(ra), str(rb)))
    return 1 if (named and args.exit_code) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff",
        help="bit-level differences between two CPUID tables or profile layers",
        description="Compare two CPUID tables bit by bit. Each side is a file (host profile, CPUID table JSON, "
        "`cpuid -r` text or libvirt cpudata XML), optionally with a layer for profiles: "
        "PROFILE:raw, PROFILE:supported (KVM_GET_SUPPORTED_CPUID), PROFILE:emulated.",
    )
    p.add_argument("a", metavar="A", help="first table, e.g. host.json:raw")
    p.add_argument("b", metavar="B", help="second table, e.g. host.json:supported")
    p.add_argument("--all-bits", action="store_true", help="also list bits that are not catalogued features")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the tables differ")
    p.set_defaults(func=cmd_diff)
