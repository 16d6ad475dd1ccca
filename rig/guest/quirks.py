"""Host-quirk detection: the guest sees other CPUID than QEMU configured, and QMP is self-consistent.

Some hypervisors never apply QEMU's CPUID to the guest. PVM, the ``/dev/kvm``
of this machine, is one: guest code in every CPU mode reads the outer host's
CPUID (7.0.EBX ``F1BF03AB`` whatever ``-cpu`` says), while QMP
``feature-words`` shows what QEMU configured. That is not a QEMU or KVM
policy bug, and the comparison must not blame either of them for it. The
detector separates that case from a real discrepancy:

1. :func:`mismatching_words`: the feature words (registers QMP reports) where
   the observed table differs from ``feature-words``, ignoring runtime bits
   (``data/runtime_bits.toml``: OSXSAVE, OSPKE, APIC).
2. :func:`check_qmp`: is QMP's own story coherent? ``feature-words`` is
   present, no bit is both in ``feature-words`` and ``filtered-features``, and
   every catalogued feature the model expansion names agrees with
   ``feature-words``. The expansion comes from ``query-cpu-model-expansion`` of
   the ``-cpu`` model, with the line's ``+f``/``-f``/``f=on|off`` applied, and
   filtered features cleared.
3. :func:`detect_host_quirk`: when 1 finds differences in at least one mode and
   2 finds QMP coherent, it returns a :class:`HostQuirk`. The quirk records which
   modes and words differ and, if the host's raw CPUID is given, how many of the
   differing bits equal it. It returns ``None`` when the guest agrees with QEMU,
   or when QMP itself is incoherent (then the finding belongs to QEMU, not to
   the host).

The functions are pure; the caller supplies tables from a launch
(:class:`rig.qemu.launcher.Observation`) and a probe report
(:class:`rig.guest.protocol.ProbeReport`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..cpuid.catalogue import catalogue
from ..cpuid.table import REGISTERS, CpuidTable, fmt_leaf
from ..errors import RigError

QUIRK_CPUID_NOT_APPLIED = "cpuid-not-applied"


class QuirkDataError(RigError):
    pass


@dataclass(frozen=True)
class RuntimeBit:
    leaf: int
    subleaf: int
    reg: str
    bit: int
    name: str
    reason: str


@cache
def runtime_bits() -> tuple[RuntimeBit, ...]:
    """The runtime-state bits of ``rig/guest/data/runtime_bits.toml``."""
    where = "rig/guest/data/runtime_bits.toml"
    try:
        data = tomllib.loads(resources.files("rig.guest").joinpath("data/runtime_bits.toml").read_text())
        out = tuple(
            RuntimeBit(int(b["leaf"]), int(b.get("subleaf", 0)), str(b["reg"]), int(b["bit"]), str(b["name"]),
                       str(b.get("reason", "")))
            for b in data["bit"]
        )
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        raise QuirkDataError(f"{where}: unreadable runtime-bit list ({e})", hint="reinstall the rig") from None
    for b in out:
        if b.reg not in REGISTERS or not 0 <= b.bit < 32:
            raise QuirkDataError(f"{where}: bad entry {b.name!r} ({b.reg}[{b.bit}])")
    return out


def runtime_mask(leaf: int, subleaf: int, reg: str) -> int:
    """Bits of (leaf, subleaf, reg) that reflect runtime state."""
    m = 0
    for b in runtime_bits():
        if (b.leaf, b.subleaf, b.reg) == (leaf, subleaf, reg):
            m |= 1 << b.bit
    return m


@dataclass(frozen=True)
class WordMismatch:
    """One feature word (register) where the guest saw other bits than QEMU configured."""

    leaf: int
    subleaf: int
    reg: str
    configured: int
    observed: int
    ignored: int = 0  # runtime bits left out

    @property
    def differing(self) -> int:
        return (self.configured ^ self.observed) & ~self.ignored & 0xFFFFFFFF

    def where(self) -> str:
        return f"{fmt_leaf(self.leaf, self.subleaf)}.{self.reg.upper()}"

    def describe(self) -> str:
        return f"{self.where()} observed {self.observed:08X}, configured {self.configured:08X}"


def mismatching_words(observed: CpuidTable, configured: CpuidTable, *, ignore_runtime: bool = True) -> list[WordMismatch]:
    """Registers known in ``configured`` whose value differs in ``observed`` (absent leaves read as 0)."""
    out = []
    for (leaf, sub), regs in configured.items():
        for reg in REGISTERS:
            cv = regs.get(reg)
            if cv is None:
                continue
            ov = observed.value(leaf, sub, reg)
            ign = runtime_mask(leaf, sub, reg) if ignore_runtime else 0
            if (cv ^ ov) & ~ign:
                out.append(WordMismatch(leaf, sub, reg, cv, ov, ign))
    return out


@dataclass(frozen=True)
class QmpConsistency:
    """Result of :func:`check_qmp`: ``problems`` lists what is incoherent (empty = coherent)."""

    problems: tuple[str, ...] = ()
    checked_features: int = 0  # catalogued features compared with the expansion

    @property
    def consistent(self) -> bool:
        return not self.problems


def cpu_flags(cpu: str | None) -> dict[str, bool]:
    """``"EPYC-Rome,-avx2,+pku,x2apic=off"`` -> ``{"avx2": False, "pku": True, "x2apic": False}``
    (boolean options only; other ``key=value`` options are left out)."""
    out: dict[str, bool] = {}
    if not cpu:
        return out
    for item in cpu.split(",")[1:]:
        item = item.strip()
        if not item:
            continue
        if item[0] in "+-":
            out[item[1:]] = item[0] == "+"
        elif "=" in item:
            k, v = item.split("=", 1)
            if v.lower() in ("on", "true", "yes"):
                out[k] = True
            elif v.lower() in ("off", "false", "no"):
                out[k] = False
    return out


def _expansion_props(expansion: Mapping[str, Any] | None) -> dict[str, Any]:
    if not expansion:
        return {}
    model = expansion.get("model", expansion)
    props = model.get("props", {}) if isinstance(model, Mapping) else {}
    return dict(props) if isinstance(props, Mapping) else {}


def check_qmp(
    feature_words: CpuidTable | None,
    *,
    filtered_features: CpuidTable | None = None,
    expansion: Mapping[str, Any] | None = None,
    cpu: str | None = None,
) -> QmpConsistency:
    """Is what QMP says about the vCPU coherent?  See the module docstring for the checks."""
    problems: list[str] = []
    if feature_words is None or len(feature_words) == 0:
        return QmpConsistency(("no feature-words from QMP",))
    if feature_words.reg(1, 0, "edx") is None or feature_words.reg(1, 0, "ecx") is None:
        problems.append("feature-words lacks leaf 1 ECX/EDX")
    if filtered_features is not None:
        for (leaf, sub), regs in filtered_features.items():
            for reg in REGISTERS:
                f, c = regs.get(reg), feature_words.reg(leaf, sub, reg)
                if f is not None and c is not None and f & c:
                    problems.append(f"{fmt_leaf(leaf, sub)}.{reg.upper()} bits {f & c:08X} both configured and filtered")
    props = _expansion_props(expansion)
    checked = 0
    if props:
        props.update(cpu_flags(cpu))
        for feat in catalogue().features:
            names = [q for q in feat.qemu if q in props and isinstance(props[q], bool)]
            if not names:
                continue
            cv = feature_words.reg(feat.leaf, feat.subleaf, feat.reg)
            if cv is None or runtime_mask(feat.leaf, feat.subleaf, feat.reg) & feat.mask:
                continue
            filtered = filtered_features.bit(feat.leaf, feat.subleaf, feat.reg, feat.bit) if filtered_features else 0
            want = int(any(props[q] for q in names) and not filtered)
            got = (cv >> feat.bit) & 1
            checked += 1
            if want != got:
                problems.append(
                    f"{feat.name} ({feat.where()}): expansion{' and -cpu flags' if cpu_flags(cpu) else ''} say "
                    f"{'on' if want else 'off'}, feature-words {got}"
                )
    return QmpConsistency(tuple(problems), checked)


@dataclass(frozen=True)
class HostQuirk:
    """The guest's CPUID is not what QEMU configured, and QMP is self-consistent.

    ``message`` is one line for reports (``rig.compare`` uses it as the
    ``quirk`` of a case). ``mismatches`` maps each differing mode to its words.
    ``host_bits_matching`` / ``host_bits_compared`` say how many of the differing
    bits equal the host's raw CPUID (both 0 when no host table was given).
    """

    kind: str
    message: str
    modes: tuple[str, ...]
    agreeing_modes: tuple[str, ...]
    mismatches: dict[str, tuple[WordMismatch, ...]] = field(default_factory=dict)
    qmp: QmpConsistency = field(default_factory=QmpConsistency)
    host_bits_matching: int = 0
    host_bits_compared: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "modes": list(self.modes),
            "agreeing_modes": list(self.agreeing_modes),
            "mismatches": {
                m: [{"word": w.where(), "observed": f"{w.observed:08x}", "configured": f"{w.configured:08x}"} for w in ws]
                for m, ws in self.mismatches.items()
            },
            "qmp_features_checked": self.qmp.checked_features,
            "host_bits_matching": self.host_bits_matching,
            "host_bits_compared": self.host_bits_compared,
        }


def _tables(observed: Any) -> dict[str, CpuidTable]:
    tables = getattr(observed, "tables", observed)
    if not isinstance(tables, Mapping):
        raise TypeError("observed must be a ProbeReport or a mapping of mode -> CpuidTable")
    return dict(tables)


def detect_host_quirk(
    observed: Any,
    feature_words: CpuidTable | None,
    *,
    filtered_features: CpuidTable | None = None,
    expansion: Mapping[str, Any] | None = None,
    cpu: str | None = None,
    host_raw: CpuidTable | None = None,
) -> HostQuirk | None:
    """A :class:`HostQuirk` when some mode's table differs from ``feature_words`` while QMP is coherent.

    ``observed``: a :class:`~rig.guest.protocol.ProbeReport` or a mapping
    mode -> :class:`CpuidTable`. ``host_raw``: the host's raw CPUID
    (``rig host capture``), optional, used to say whether the guest sees the
    host's own bits.
    """
    tables = _tables(observed)
    if feature_words is None or not tables:
        return None
    per_mode = {m: tuple(mismatching_words(t, feature_words)) for m, t in tables.items()}
    bad = tuple(m for m, ws in per_mode.items() if ws)
    if not bad:
        return None
    qmp = check_qmp(feature_words, filtered_features=filtered_features, expansion=expansion, cpu=cpu)
    if not qmp.consistent:
        return None
    matching = compared = 0
    if host_raw is not None:
        for m in bad:
            for w in per_mode[m]:
                hv = host_raw.reg(w.leaf, w.subleaf, w.reg)
                if hv is None:
                    continue
                d = w.differing
                compared += bin(d).count("1")
                matching += bin(~(hv ^ w.observed) & d).count("1")
    words = sorted({w.where() for m in bad for w in per_mode[m]})
    first = per_mode[bad[0]]
    example = next((w for w in first if (w.leaf, w.subleaf, w.reg) == (7, 0, "ebx")), first[0]).describe()
    every = "every mode" if len(bad) == len(tables) else f"mode(s) {', '.join(bad)}"
    msg = (
        f"host quirk: the guest's CPUID differs from what QEMU configured in {every} "
        f"({len(words)} feature word(s), e.g. {example}) while QMP is self-consistent: "
        "the hypervisor does not apply QEMU's CPUID (as PVM does, passing the outer host's through)"
    )
    if compared:
        msg += f"; {matching} of {compared} differing bits equal the host's raw CPUID"
    return HostQuirk(
        kind=QUIRK_CPUID_NOT_APPLIED,
        message=msg,
        modes=bad,
        agreeing_modes=tuple(m for m in tables if m not in bad),
        mismatches={m: per_mode[m] for m in bad},
        qmp=qmp,
        host_bits_matching=matching,
        host_bits_compared=compared,
    )
