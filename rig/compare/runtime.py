"""Runtime CPUID bits (OSXSAVE, OSPKE) by the rules in ``rig/compare/data/runtime.toml``.

QEMU's configuration never holds these bits: the CPU (or QEMU's CPUID
emulation) derives them from CR4.  :func:`expected_in_mode` gives what a guest
must read in a probe mode, :func:`check_snapshots` checks the probe's runtime
experiments (CR4 written before/after) against the configured feature bit.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..cpuid.table import REGISTERS, CpuidTable, Location
from ..errors import RigError

BEHAVIOURS = ("zero", "follows")


class RuntimeRuleError(RigError):
    pass


@dataclass(frozen=True)
class RuntimeBit:
    name: str
    location: Location
    follows: Location
    follows_name: str
    experiment: str
    modes: dict[str, str]
    #: probe skip reasons (``RT <exp> skip reason=...``) that are themselves a finding: the guest could not
    #: enable the feature although CPUID advertises it; reason -> explanation
    skip_findings: dict[str, str] = field(default_factory=dict)

    def expected(self, mode: str, configured: CpuidTable) -> int | None:
        """The bit a guest reads in ``mode``'s enumeration (None: no rule for that mode)."""
        how = self.modes.get(mode)
        if how is None:
            return None
        if how == "zero":
            return 0
        f = self.follows
        return configured.bit(f.leaf, f.subleaf, f.reg, f.bit)


def _loc(d: Mapping[str, Any], where: str) -> Location:
    try:
        reg = str(d["reg"]).lower()
        if reg not in REGISTERS:
            raise RuntimeRuleError(f"{where}: reg {reg!r} is not eax, ebx, ecx or edx")
        return Location(int(d["leaf"]), int(d.get("subleaf", 0)), reg, int(d["bit"]))
    except KeyError as e:
        raise RuntimeRuleError(f"{where}: missing {e.args[0]!r} (expected leaf, reg, bit)") from None


def load_runtime_rules(path: str | Path | None = None) -> tuple[RuntimeBit, ...]:
    if path is None:
        text = resources.files("rig.compare").joinpath("data/runtime.toml").read_text()
        where = "rig/compare/data/runtime.toml"
    else:
        text, where = Path(path).read_text(), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuntimeRuleError(f"{where}: not valid TOML: {e}") from None
    out = []
    for i, b in enumerate(data.get("bit", [])):
        w = f"{where}: bit[{i}]"
        modes = dict(b.get("modes", {}))
        bad = [v for v in modes.values() if v not in BEHAVIOURS]
        if bad:
            raise RuntimeRuleError(f"{w}: mode behaviour {bad[0]!r} is not one of {', '.join(BEHAVIOURS)}")
        if "follows" not in b or "name" not in b:
            raise RuntimeRuleError(f"{w}: needs name and follows")
        skips = b.get("skip_findings", {})
        if not isinstance(skips, dict) or not all(isinstance(v, str) for v in skips.values()):
            raise RuntimeRuleError(f"{w}: skip_findings must map skip reasons to explanations")
        out.append(RuntimeBit(str(b["name"]), _loc(b, w), _loc(b["follows"], w + ".follows"),
                              str(b["follows"].get("name", "")), str(b.get("experiment", "")), modes,
                              dict(skips)))
    return tuple(out)


@cache
def default_runtime_rules() -> tuple[RuntimeBit, ...]:
    return load_runtime_rules()


def runtime_mask(leaf: int, subleaf: int, reg: str, rules: Iterable[RuntimeBit] | None = None) -> int:
    m = 0
    for r in default_runtime_rules() if rules is None else rules:
        loc = r.location
        if (loc.leaf, loc.subleaf, loc.reg) == (leaf, subleaf, reg):
            m |= 1 << loc.bit
    return m


@dataclass(frozen=True)
class RuntimeMismatch:
    rule: RuntimeBit
    mode: str
    phase: str           # before | after | observed
    expected: int
    observed: int
    note: str


def check_snapshots(runtime: Mapping[str, Iterable[Any]], configured: CpuidTable,
                    rules: Iterable[RuntimeBit] | None = None) -> list[RuntimeMismatch]:
    """Check the probe's runtime experiments (``ProbeReport.runtime``) against the rules.

    ``before``: 0; ``after`` (CR4 written without a fault): the configured
    feature bit; ``observed`` (user mode): the configured feature bit.
    """
    out = []
    rules = tuple(default_runtime_rules() if rules is None else rules)
    for mode, snaps in runtime.items():
        for s in snaps:
            for r in rules:
                if s.experiment != r.experiment:
                    continue
                if s.phase == "skip":
                    why = r.skip_findings.get(s.reason or "")
                    f = r.follows
                    if why is not None and configured.bit(f.leaf, f.subleaf, f.reg, f.bit):
                        # the feature is advertised, yet the probe could not turn it on
                        out.append(RuntimeMismatch(r, mode, "skip", 1, 0, f"probe skipped {r.experiment} "
                                                   f"({s.reason}): {why}"))
                    continue
                loc = r.location
                got = s.cpuid.bit(loc.leaf, loc.subleaf, loc.reg, loc.bit)
                if got is None:
                    continue
                feat = configured.bit(r.follows.leaf, r.follows.subleaf, r.follows.reg, r.follows.bit) or 0
                if s.phase == "before":
                    want, note = 0, f"before setting CR4 ({r.name} must read 0)"
                elif s.fault is not None:
                    want, note = 0, f"the CR4/XSETBV write faulted ({s.fault.step}:{s.fault.vector}); {r.name} stays 0"
                else:
                    want = feat
                    note = f"after setting CR4 {r.name} must equal {r.follows_name or r.follows} ({feat})"
                if got != want:
                    out.append(RuntimeMismatch(r, mode, s.phase, want, got, note))
    return out
