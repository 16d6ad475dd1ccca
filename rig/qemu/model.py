"""The QEMU CPU-model layer model: predict what QEMU configures for a ``-cpu`` line.

Public API::

    from rig.qemu.model import predict_guest
    p = predict_guest(facts, "Skylake-Server,-avx2", accel="tcg", machine="microvm")
    p.table        # CpuidTable: the feature words QEMU puts into the vCPU
                   # (the registers of QMP ``feature-words``, exactly)
    p.filtered     # CpuidTable: QMP ``filtered-features`` (same registers)
    p.levels       # {"level": 0xD, "xlevel": 0x80000008, "xlevel2": 0, "level-func7": 0}
    p.resolved_model, p.notes

``facts`` is a :class:`rig.qemu.binaries.BinaryFacts` (``gather_facts(binary)``:
``query-cpu-definitions`` and the static ``query-cpu-model-expansion`` of every
model, taken once per binary under ``-M none -accel tcg`` and cached), or
anything with ``version``, ``accel``, ``definitions`` and ``static``.

``supported`` is the KVM supported table for ``accel="kvm"``: the measured
``KVM_GET_SUPPORTED_CPUID`` of a host profile (native) or
``rig.policy.predict_supported(...).table`` (simulate/emulated); ``host_raw``
(the host's raw CPUID) feeds the fix-ups that copy host bits (QEMU 10.0).

The steps, in QEMU's order (``x86_cpu_initfn`` … ``x86_cpu_realizefn``):

1. model definition: the static expansion of the model *version* the machine
   resolves an unversioned name to (``microvm``: the latest version; ``pc``,
   ``q35``, ``none``: v1) - this is why ``-M microvm -cpu Skylake-Server`` has
   no clflushopt (Skylake-Server-v2 turned it off and later versions keep it
   off) while ``-M q35`` has it (v1); 7.0.EBX 011803A9 vs 019803A9 under TCG;
2. accelerator default properties (TCG: ``vme=off``; KVM: kvmclock & co.,
   ``x2apic=on``, ``acpi/monitor/svm=off``), then the versioned machine type's
   CPU compat properties (``machines-X.Y.toml``: features, levels,
   ``full-cpuid-auto-level``, ``x-intel-pt-auto-level``, ``x-arch-cap-always-on`` ...);
3. ``-cpu`` properties ``f=on|off`` in order, then ``+f``, then ``-f``
   (:mod:`rig.qemu.cpuline`); ``max``/``host`` then add every supported feature
   the user did not set (except ``no_autoenable`` bits);
4. feature dependencies (``feature_dependencies[]``): a feature whose
   prerequisite is off is removed (and reported filtered if the user asked for it);
5. FEAT_KVM cleared unless KVM; XSAVE component words from the enabled features;
6. automatic level raising (min-level/min-xlevel from non-zero words);
7. filtering against the accelerator: TCG's ``tcg_features`` of that QEMU
   version, or KVM's supported table with QEMU's fix-ups on top
   (``kvm_arch_get_supported_cpuid``); removed bits go to ``filtered``;
8. AMD: CPUID[8000_0001].EDX aliases copied from CPUID[1].EDX.

Each step is one function (``_load_model``, ``_accel_defaults``,
``_machine_compat``, ``_cpu_flags``, ``_supported_words``, ``_expand_max``,
``_dependencies``, ``_kvm_only_and_xsave``, ``_levels``, ``_filter``,
``_amd_aliases``) over one :class:`_Build`.  Facts come from ``rig/qemu/data``
(see :mod:`rig.qemu.facts`); where they are not the binary's own (another
series), :attr:`QemuPrediction.approximations` says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..cpuid.table import CpuidTable
from ..errors import RigError
from .cpuline import CpuLine, bool_value, effective_settings
from .facts import MachineCompat, VersionData, WordDef, version_data

ACCELS = ("tcg", "kvm")
MAX_MODELS = frozenset({"max", "host"})
#: non-feature -cpu properties the model understands
LEVEL_PROPS = {"level": "level", "xlevel": "xlevel", "xlevel2": "xlevel2", "min-level": "min-level",
               "min-xlevel": "min-xlevel", "min-xlevel2": "min-xlevel2", "level-func7": "level-func7"}
#: properties that do not change feature words (accepted, noted)
OTHER_PROPS = frozenset({
    "vendor", "family", "model", "stepping", "model-id", "pmu", "enforce", "check", "migratable",
    "host-cache-info", "l3-cache", "legacy-cache", "cpuid-0xb", "tsc-frequency", "tsc-freq", "phys-bits",
    "host-phys-bits", "ucode-rev", "full-cpuid-auto-level", "kvm", "x-force-features", "lbr-fmt",
})


class QemuModelError(RigError):
    pass


class UnknownCpuModel(QemuModelError):
    pass


class ModelFacts(Protocol):
    version: tuple[int, int, int]
    accel: str
    definitions: list[Any]
    static: Mapping[str, Any]


@dataclass
class QemuPrediction:
    """What QEMU configures for one case (the *qemu configured* layer, predicted)."""

    table: CpuidTable                 # feature words after filtering (QMP feature-words)
    filtered: CpuidTable              # QMP filtered-features
    levels: dict[str, int]
    resolved_model: str
    vendor: str | None
    notes: list[str] = field(default_factory=list)
    requested: CpuidTable = field(default_factory=CpuidTable)  # before filtering
    series: str = ""                  # the QEMU series whose facts were used
    accel: str = "tcg"
    cpu_line: str = ""
    trace: list[TraceEvent] = field(default_factory=list)
    #: for an unversioned model: the other versions' feature words (model step), to explain version choice
    other_versions: dict[str, dict[str, int]] = field(default_factory=dict)
    #: one sentence per input that is not the binary's own (another series' facts, a machine type
    #: without data), naming what was used and how to get the exact input; empty = exact
    approximations: list[str] = field(default_factory=list)

    def filtered_names(self, data: VersionData | None = None) -> list[str]:
        """QEMU property names of the filtered features (``leaf.sub.reg[bit]`` for unnamed bits)."""
        if data is None and self.series:
            data = version_data(self.series)
        names = []
        for (leaf, sub), regs in self.filtered.items():
            for reg in ("eax", "ebx", "ecx", "edx"):
                v = regs.get(reg) or 0
                if data is not None:
                    w = data.word_at(leaf, sub, reg)
                else:
                    w = None
                for bit in range(32):
                    if v >> bit & 1:
                        n = w.names[bit] if w is not None else ""
                        names.append(n or f"{leaf:#x}.{sub}.{reg}[{bit}]")
        return names

    def explain(self, feature: str) -> list[str]:
        """Step by step, why ``feature`` (a QEMU name) ends up on or off."""
        data = version_data(self.series)
        f = data.feature(feature)
        if f is None:
            raise QemuModelError(f"QEMU {self.series} has no CPU feature {feature!r}")
        word, mask = f
        w = data.words[word]
        lines = [n for n in self.notes if " resolves to " in n]
        state = 0
        for ev in self.trace:
            if ev.word == word and ev.mask & mask:
                state = ev.value
                lines.append(f"{ev.step:<13} {feature} = {ev.value}  ({ev.detail})")
        if not any(ev.step == "model" for ev in self.trace if ev.word == word and ev.mask & mask):
            head = sum(1 for n in self.notes if " resolves to " in n)
            lines.insert(head, f"{'model':<13} {feature} = 0  (model {self.resolved_model} does not have it)")
        final = self.table.value(w.leaf, w.subleaf or 0, w.reg) & mask
        filt = self.filtered.value(w.leaf, w.subleaf or 0, w.reg) & mask
        loc = f"{w.leaf:#x}.{w.subleaf or 0}.{w.reg.upper()}"
        lines += [f"{'why':<13} {n}" for n in self.notes if n.startswith(f"{feature}:")]
        lines.append(f"{'configured':<13} {feature} = {int(bool(final))}  ({loc}; "
                     f"{'in filtered-features' if filt else 'not filtered'})")
        lines += [f"{'approximate':<13} {a}" for a in self.approximations]
        del state
        here = None
        for ev in self.trace:
            if ev.step == "model" and ev.word == word:
                here = int(bool(ev.value and ev.mask & mask))
        here = here or 0
        differ = sorted((n for n, fw in self.other_versions.items() if int(bool(fw.get(word, 0) & mask)) != here),
                        key=lambda n: int(n.rpartition("-v")[2]))
        if differ:
            lines.append(f"{'versions':<13} {feature} = {1 - here} in {', '.join(differ)} "
                         f"(e.g. -M q35/pc use v1, -M microvm the latest)")
        return lines

    def with_levels(self) -> CpuidTable:
        """:attr:`table` plus the registers the levels and vendor decide (``cpu_x86_cpuid``):
        0.EAX = level, 0.EBX/EDX/ECX = vendor, 0x80000000.EAX = xlevel, 7.0.EAX = level-func7
        (when level >= 7).  What the run compares with QMP (feature words) and the guest (the rest)."""
        t = self.table.copy()
        self._add_levels(t)
        return t

    def guest_table(self) -> CpuidTable:
        """What the guest reads: :meth:`with_levels` with the version's guest rules applied
        (:func:`guest_visible`: leaf 0xD zero without XSAVE, PDCM hidden without pmu=on, ...)."""
        t = guest_visible(self.table, self.series, self.accel, self.cpu_line) if self.series else self.table.copy()
        self._add_levels(t)
        return t

    def _add_levels(self, t: CpuidTable) -> None:
        t.set_reg(0, 0, "eax", self.levels["level"])
        if self.vendor and len(self.vendor) == 12:
            raw = self.vendor.encode("latin-1")
            for reg, part in (("ebx", raw[0:4]), ("edx", raw[4:8]), ("ecx", raw[8:12])):
                t.set_reg(0, 0, reg, int.from_bytes(part, "little"))
        t.set_reg(0x80000000, 0, "eax", self.levels["xlevel"])
        if self.levels["level"] >= 7:
            t.set_reg(7, 0, "eax", self.levels["level-func7"])

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table.to_json(), "filtered": self.filtered.to_json(), "levels": dict(self.levels),
                "resolved_model": self.resolved_model, "vendor": self.vendor, "notes": list(self.notes),
                "approximations": list(self.approximations)}


# ---------------------------------------------------------------------------
# model resolution


def _definition_names(facts: ModelFacts) -> dict[str, Any]:
    out = {}
    for d in facts.definitions:
        name = d.name if hasattr(d, "name") else d["name"]
        out[name] = d
    return out


def _alias_of(d: Any) -> str | None:
    return getattr(d, "alias_of", None) if not isinstance(d, Mapping) else d.get("alias-of")


def resolve_model(facts: ModelFacts, model: str, machine_version: str) -> str:
    """The versioned model name QEMU instantiates for ``model`` on a machine (``latest``/``v1``/``legacy``)."""
    defs = _definition_names(facts)
    if model not in defs:
        near = sorted(n for n in defs if n.lower().startswith(model.lower()[:3]))[:5]
        raise UnknownCpuModel(f"unknown CPU model {model!r} for QEMU {'.'.join(map(str, facts.version))}",
                              hint="known models include " + ", ".join(near) if near else "see qemu -cpu help")
    if re.search(r"-v\d+$", model) or model in MAX_MODELS:
        return model
    versions = sorted((int(m.group(1)), n) for n in defs if (m := re.fullmatch(re.escape(model) + r"-v(\d+)", n)))
    if not versions:
        return model  # unversioned-only (e.g. "base")
    if machine_version == "latest":
        return versions[-1][1]
    alias = _alias_of(defs[model])
    # facts are taken with -M none (v1); legacy = definition without version props = v1 features
    return alias if alias and alias in defs else versions[0][1]


def _base_name(model: str) -> str:
    return re.sub(r"-v\d+$", "", model)


# ---------------------------------------------------------------------------
# the steps


def _words_from_props(data: VersionData, props: Mapping[str, Any]) -> dict[str, int]:
    feats = {w: 0 for w in data.words}
    for name, value in props.items():
        if value is not True:
            continue
        f = data.feature(name)
        if f is not None:
            feats[f[0]] |= f[1]
    return feats


@dataclass(frozen=True)
class TraceEvent:
    """One step that set or cleared bits of a feature word (see :meth:`QemuPrediction.explain`)."""

    step: str       # model | accel-default | always-on | property | plus | minus | max | dependency |
                    # kvm-only | filter | amd-alias
    word: str
    mask: int
    value: int      # 1 = set, 0 = cleared
    detail: str


def _set(feats: dict[str, int], data: VersionData, name: str, on: bool, user: dict[str, int] | None,
         trace: list[TraceEvent] | None = None, step: str = "", detail: str = "") -> bool:
    f = data.feature(name)
    if f is None:
        return False
    w, m = f
    if trace is not None:
        trace.append(TraceEvent(step, w, m, int(on), detail or f"{name}={'on' if on else 'off'}"))
    feats[w] = feats[w] | m if on else feats[w] & ~m
    if user is not None:
        user[w] |= m
    return True


def _kvm_supported(data: VersionData, supported: CpuidTable, host_raw: CpuidTable | None,
                   irqchip: str, notes: list[str]) -> dict[str, int]:
    """KVM's table per feature word with QEMU's fix-ups (kvm_arch_get_supported_cpuid)."""
    out = {}
    for w in data.words.values():
        out[w.name] = supported.value(w.leaf, w.subleaf or 0, w.reg)
    fixed_1_edx = None
    for fx in data.kvm_fixups:
        w = data.word_at(fx.leaf, fx.subleaf, fx.reg)
        if w is None:
            continue
        if fx.when == "irqchip" and irqchip == "off":
            continue
        if fx.when == "no-irqchip" and irqchip != "off":
            continue
        if fx.when == "split-irqchip" and irqchip != "split":
            continue
        if fx.set:
            out[w.name] |= data.mask_of(w.name, fx.set)
        if fx.clear:
            out[w.name] &= ~data.mask_of(w.name, fx.clear)
        if fx.host:
            if host_raw is None:
                notes.append(f"KVM fix-up needs the host's CPUID ({', '.join(fx.host)}); assumed absent")
            else:
                out[w.name] |= host_raw.value(fx.leaf, fx.subleaf, fx.reg) & data.mask_of(w.name, fx.host)
        if fx.copy_amd_aliases:
            if fixed_1_edx is None:
                fixed_1_edx = out.get("FEAT_1_EDX", 0)
            out[w.name] |= fixed_1_edx & data.amd_aliases
    # 0xD.0 EAX/EDX: QEMU asks KVM_GET_DEVICE_ATTR(KVM_X86_XCOMP_GUEST_SUPP), which includes
    # components that need arch_prctl permission (AMX); the supported table stands in for it
    return out


def _adjust_levels(data: VersionData, feats: dict[str, int], levels: dict[str, int], auto: bool,
                   intel_pt_auto: bool = True) -> None:
    def raise_to(key: str, v: int) -> None:
        levels[key] = max(levels[key], v)

    words = list(data.level_always) + (list(data.level_auto) if auto else [])
    for name in words:
        w = data.words[name]
        if not feats.get(name):
            continue
        region = w.leaf & 0xF0000000
        key = {0: "min-level", 0x80000000: "min-xlevel", 0xC0000000: "min-xlevel2"}.get(region)
        if key:
            raise_to(key, w.leaf)
        if w.leaf == 7:
            raise_to("min-level-func7", w.subleaf or 0)
    if not auto:
        return
    for r in data.level_rules:
        if r.feature == "intel-pt" and not intel_pt_auto:
            continue  # x-intel-pt-auto-level=off (older machine types): see _levels
        if r.feature is not None:
            f = data.feature(r.feature)
            on = bool(f and feats.get(f[0], 0) & f[1])
        else:
            on = bool(feats.get(r.word or "", 0))
        if on:
            if r.min_level is not None:
                raise_to("min-level", r.min_level)
            if r.min_xlevel is not None:
                raise_to("min-xlevel", r.min_xlevel)


def _xsave_words(data: VersionData, feats: dict[str, int], supp: Mapping[str, int]) -> None:
    names = ("FEAT_XSAVE_XCR0_LO", "FEAT_XSAVE_XCR0_HI", "FEAT_XSAVE_XSS_LO", "FEAT_XSAVE_XSS_HI")
    xsave = data.feature("xsave")
    if xsave is None or not feats[xsave[0]] & xsave[1]:
        for n in names:
            if n in feats:
                feats[n] = 0
        return
    mask = 0
    supported_xcr0 = supp.get("FEAT_XSAVE_XCR0_LO", 0) | supp.get("FEAT_XSAVE_XCR0_HI", 0) << 32
    for comp, word, bits in data.xsave:
        if data.xsave_drop_unsupported and comp >= 2 and not supported_xcr0 >> comp & 1:
            continue
        if feats.get(word, 0) & bits:
            mask |= 1 << comp
    x, s = mask & data.xcr0_mask, mask & data.xss_mask
    for n, v in zip(names, (x & 0xFFFFFFFF, x >> 32, s & 0xFFFFFFFF, s >> 32), strict=True):
        if n in feats:
            feats[n] = v


def _table(data: VersionData, feats: Mapping[str, int]) -> CpuidTable:
    t = CpuidTable()
    for w in data.words.values():
        t.set_reg(w.leaf, w.subleaf or 0, w.reg, feats.get(w.name, 0))
    return t


@dataclass
class _Build:
    """The state of one prediction as QEMU's steps change it (one per :func:`predict_guest` call)."""

    data: VersionData
    line: CpuLine
    accel: str
    machine: str
    irqchip: str
    resolved: str = ""
    props: Mapping[str, Any] = field(default_factory=dict)
    feats: dict[str, int] = field(default_factory=dict)
    user: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    trace: list[TraceEvent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    approximations: list[str] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    level_user: dict[str, int] = field(default_factory=dict)
    vendor: str | None = None
    expose_kvm: bool = True
    full_auto_level: bool = True
    intel_pt_auto_level: bool = True
    #: other CPU properties set by the machine's compat properties or -cpu (x-arch-cap-always-on ...), in order
    xprops: dict[str, str] = field(default_factory=dict)
    other_versions: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def is_max(self) -> bool:
        return self.line.model in MAX_MODELS


def predict_guest(
    qemu_facts: ModelFacts,
    cpu_line: str | CpuLine,
    accel: str,
    machine: str = "microvm",
    supported: CpuidTable | None = None,
    *,
    host_raw: CpuidTable | None = None,
    irqchip: str | None = None,
) -> QemuPrediction:
    """Predict QEMU's configured feature words (and filtered features) for one case.

    ``accel``: ``"tcg"`` or ``"kvm"`` (``supported`` is then required);
    ``machine``: the ``-M`` value; ``irqchip``: ``on``, ``split`` or ``off``
    (default: the machine's, split on microvm, in-kernel on pc/q35).  Raises
    :class:`UnknownCpuModel` for a model the binary does not know and
    :class:`QemuModelError` for flags it does not know.  Every input that is
    not the binary's own (another series' facts, a machine type without data)
    is named in :attr:`QemuPrediction.approximations`.
    """
    _check_inputs(accel, supported)
    line = cpu_line if isinstance(cpu_line, CpuLine) else CpuLine.parse(cpu_line)
    data = version_data(tuple(qemu_facts.version))
    b = _Build(data, line, accel, machine, irqchip or data.default_irqchip(machine))
    b.approximations += data.approximations()
    compat, why = data.machine_compat(machine)
    if why:
        b.approximations.append(why)
    _load_model(b, qemu_facts)
    _accel_defaults(b, getattr(qemu_facts, "accel", "tcg"), compat)
    _machine_compat(b, compat)
    _cpu_flags(b)
    supp = _supported_words(b, supported, host_raw)
    if b.is_max:
        _expand_max(b, supp, supported)
    _dependencies(b)
    _kvm_only_and_xsave(b, supp)
    out_levels = _levels(b)
    requested = _table(data, b.feats)
    _filter(b, supp)
    _amd_aliases(b)
    return QemuPrediction(_table(data, b.feats), _table(data, b.filtered), out_levels, b.resolved, b.vendor, b.notes,
                          requested, data.series, accel, str(line), b.trace, b.other_versions, b.approximations)


def _check_inputs(accel: str, supported: CpuidTable | None) -> None:
    if accel not in ACCELS:
        raise QemuModelError(f"accelerator {accel!r} is not modelled (expected tcg or kvm)")
    if accel == "kvm" and supported is None:
        raise QemuModelError("a KVM prediction needs the KVM supported table",
                             hint="pass a host profile's KVM_GET_SUPPORTED_CPUID or rig.policy.predict_supported(...).table")


def _load_model(b: _Build, qemu_facts: ModelFacts) -> None:
    """Step 1: the model version the machine resolves the name to, its static expansion, its levels."""
    data, line = b.data, b.line
    mver = data.machine_version(b.machine)
    b.resolved = resolve_model(qemu_facts, line.model, mver)
    exp = qemu_facts.static.get(b.resolved)
    if exp is None:
        raise QemuModelError(f"no static expansion of {b.resolved!r} in the facts of {getattr(qemu_facts, 'binary', 'QEMU')}",
                             hint="re-gather the binary's facts (rig.qemu.binaries.gather_facts with use_cache=False)")
    b.props = exp.props if hasattr(exp, "props") else dict(exp["model"]["props"])
    b.feats = _words_from_props(data, b.props)
    b.user = {w: 0 for w in data.words}
    b.filtered = {w: 0 for w in data.words}
    if b.resolved != line.model:
        why = {"latest": "the latest version (x86_cpus_init(CPU_VERSION_LATEST))",
               "legacy": "the definition without version properties (CPU_VERSION_LEGACY, v1 features)"}.get(
                   mver, "version 1 (default_cpu_version = 1)")
        b.notes.append(f"machine {b.machine.split(',')[0]}: {line.model} resolves to {b.resolved}, {why}")
        if not re.search(r"-v\d+$", line.model):
            for name, exp2 in qemu_facts.static.items():
                if re.fullmatch(re.escape(line.model) + r"-v\d+", name) and name != b.resolved:
                    p2 = exp2.props if hasattr(exp2, "props") else dict(exp2["model"]["props"])
                    b.other_versions[name] = _words_from_props(data, p2)
    b.trace += [TraceEvent("model", w, v, 1, f"model {b.resolved} (static expansion)") for w, v in b.feats.items() if v]
    b.vendor = b.props.get("vendor") if isinstance(b.props.get("vendor"), str) else None
    base_def = data.models.get(_base_name(b.resolved))
    b.levels = {"min-level": 0, "min-xlevel": 0, "min-xlevel2": 0, "min-level-func7": 0}
    if base_def is not None:
        b.levels["min-level"], b.levels["min-xlevel"] = base_def.level, base_def.xlevel
    elif not b.is_max:  # max/host have no definition: min levels start at 0 (KVM: the supported table's)
        for k in ("min-level", "min-xlevel", "min-xlevel2"):
            b.levels[k] = int(b.props.get(k, 0) or 0)


def _accel_defaults(b: _Build, facts_accel: str, compat: MachineCompat | None) -> None:
    """Step 2: undo the facts' accelerator defaults, apply the case's (as changed by the machine), always-on bits."""
    data = b.data
    if not b.is_max:
        base_def = data.models.get(_base_name(b.resolved))
        if facts_accel == "tcg" and b.accel != "tcg":
            for n in data.tcg_default_props:
                if n == "vme" and base_def is not None:
                    _set(b.feats, data, n, base_def.vme, None, b.trace, "model",
                         f"{n}: the model definition's value (TCG facts show tcg_default_props)")
                else:
                    b.notes.append(f"{n}: the model's own value is unknown from TCG facts; kept as {n}=off")
        elif facts_accel not in ("tcg", b.accel):
            raise QemuModelError(f"facts taken under accel {facts_accel!r} cannot model accel {b.accel!r}",
                                 hint="gather facts with accel='tcg'")
        defaults = dict(data.tcg_default_props) if b.accel == "tcg" else dict(data.kvm_default_props)
        if b.accel == "kvm":
            for prop, value in compat.kvm_defaults if compat else ():
                # x86_cpu_change_kvm_default from the machine's init-time compat function
                if value:
                    defaults[prop] = value in ("on", "true")
                else:
                    defaults.pop(prop, None)
                b.notes.append(f"machine {compat.name if compat else ''}: KVM default {prop} "
                               f"{'= ' + value if value else 'removed'} (x86_cpu_change_kvm_default)")
            if b.irqchip == "off":
                defaults["x2apic"] = False
            elif b.irqchip == "split":
                defaults["kvm-msi-ext-dest-id"] = True
        for n, v in defaults.items():
            _set(b.feats, data, n, bool(v), None, b.trace, "accel-default",
                 f"{n}={'on' if v else 'off'}: {b.accel} default property")
    for n in data.always_on:
        _set(b.feats, data, n, True, None, b.trace, "always-on", f"{n}: always set by x86_cpu_load_model")


#: compat properties that are not feature bits but change what the model predicts
_COMPAT_FLAGS = {"full-cpuid-auto-level": "full_auto_level", "x-intel-pt-auto-level": "intel_pt_auto_level"}


def _machine_compat(b: _Build, compat: MachineCompat | None) -> None:
    """Step 2b: the machine type's compat properties for this CPU class (device_post_init: after the
    accelerator's defaults, before -cpu).  Feature properties count as user-set (QEMU's setter marks them)."""
    if compat is None:
        return
    data = b.data
    for prop, value in compat.for_model(b.line.model):
        detail = f"{prop}={value}: compat property of machine {compat.name}"
        if prop in _COMPAT_FLAGS:
            setattr(b, _COMPAT_FLAGS[prop], bool_value_str(value))
            b.notes.append(detail)
        elif prop in LEVEL_PROPS:
            b.level_user[LEVEL_PROPS[prop]] = int(value, 0)
            b.notes.append(detail)
        elif data.feature(prop) is not None:
            _set(b.feats, data, prop, bool_value_str(value), b.user, b.trace, "compat", detail)
        else:
            b.xprops[prop] = value


def _cpu_flags(b: _Build) -> None:
    """Step 3: -cpu properties f=on|off in order, then every +f, then every -f."""
    data, line = b.data, b.line
    settings, plus, minus, warnings = effective_settings(line.flags)
    b.notes.extend(warnings)
    for name, value in settings:
        if name in LEVEL_PROPS:
            try:
                b.level_user[LEVEL_PROPS[name]] = int(value, 0)
            except ValueError:
                raise QemuModelError(f"-cpu {line}: {name}={value!r} is not a number") from None
            continue
        if name in _COMPAT_FLAGS:
            setattr(b, _COMPAT_FLAGS[name], bool_value_str(value))
            continue
        if data.feature(name) is None:
            if name in OTHER_PROPS or name.startswith(("hv-", "vmx-", "x-")):
                if name == "kvm":
                    b.expose_kvm = bool_value_str(value)
                elif name == "vendor":
                    b.vendor = value
                elif any(v.unless_prop == name for v in data.vendor_unavailable):
                    b.xprops[name] = value
                else:
                    b.notes.append(f"{name}={value}: not a CPUID feature word property (not modelled)")
                continue
            raise QemuModelError(f"-cpu {line}: QEMU {data.series} has no CPU property {name!r}",
                                 hint="see `rig features` for QEMU feature names")
        _set(b.feats, data, name, bool_value_str(value), b.user, b.trace, "property", f"-cpu {name}={value}")
    for name, on in [(n, True) for n in plus] + [(n, False) for n in minus]:
        if not _set(b.feats, data, name, on, b.user, b.trace, "plus" if on else "minus",
                    f"-cpu {'+' if on else '-'}{name} (applied after every f=on|off)"):
            if name.startswith(("hv-", "vmx-")) or name in OTHER_PROPS:
                b.notes.append(f"{'+' if on else '-'}{name}: not a CPUID feature word property (not modelled)")
                continue
            raise QemuModelError(f"-cpu {line}: QEMU {data.series} has no CPU feature {name!r}",
                                 hint="see `rig features` for QEMU feature names")


def _supported_words(b: _Build, supported: CpuidTable | None, host_raw: CpuidTable | None) -> dict[str, int]:
    """What the accelerator supports per word (TCG's mask, or KVM's table with QEMU's fix-ups); under KVM
    a builtin model takes the host's vendor."""
    data = b.data
    if b.accel == "tcg":
        supp = {w.name: w.tcg for w in data.words.values()}
    else:
        assert supported is not None
        supp = _kvm_supported(data, supported, host_raw, b.irqchip, b.notes)
        if b.is_max:
            b.vendor = supported.vendor  # host/max take the host's vendor at instance init
        elif data.kvm_vendor_from_host and not any(
                f.name == "vendor" and f.syntax == "=" for f in b.line.flags):
            host_vendor = (host_raw.vendor if host_raw is not None else None) or supported.vendor
            if host_vendor:
                b.vendor = host_vendor
            else:
                b.notes.append("host vendor unknown (no host CPUID, no leaf 0 in the supported table): kept the model's")
    for n in data.unavailable:
        w, m = data.feature(n)  # type: ignore[misc]
        supp[w] &= ~m
    return supp


def _user_props(b: _Build) -> set[str]:
    return {f.name for f in b.line.flags}


def _vendor_unavailable(b: _Build) -> dict[str, int]:
    """Features x86_cpu_get_supported_feature_word(cpu, w) withholds from this CPU's vendor (only where QEMU
    passes the CPU: max/host expansion; filtering asks without one)."""
    out: dict[str, int] = {}
    for v in b.data.vendor_unavailable:
        if b.vendor != v.vendor:
            continue
        value = b.xprops.get(v.unless_prop, "off") if v.unless_prop else "off"
        w, m = b.data.feature(v.feature)  # type: ignore[misc]
        if bool_value_str(value):
            b.notes.append(f"{v.feature}: offered to {v.vendor} CPUs only because {v.unless_prop}={value}"
                           f"{' (a compat property of the machine type)' if v.unless_prop not in _user_props(b) else ''}")
            continue
        out[w] = out.get(w, 0) | m
        b.trace.append(TraceEvent("vendor", w, m, 0, f"QEMU {b.data.series} does not offer {v.feature} to a {v.vendor} "
                                  f"CPU (x86_cpu_get_supported_feature_word) unless {v.unless_prop}=on; this machine "
                                  f"type leaves it off (machine types 10.0 and older set it: pc_compat_10_0)"))
    return out


def _expand_max(b: _Build, supp: Mapping[str, int], supported: CpuidTable | None) -> None:
    """x86_cpu_expand_features: max/host add every supported (migratable) feature the user did not set."""
    withheld = _vendor_unavailable(b) if b.accel == "kvm" else {}
    for w in b.data.words.values():
        if b.accel == "tcg":
            continue  # the TCG facts' expansion of max already is tcg & migratable & ~no_autoenable
        add = supp[w.name] & ~withheld.get(w.name, 0) & w.migratable_mask() & ~b.user[w.name] & ~w.no_autoenable
        b.feats[w.name] |= add
        if add:
            b.trace.append(TraceEvent("max", w.name, add, 1, "max/host: every supported feature not set by the user"))
    if b.accel == "kvm" and supported is not None:
        b.levels["min-level"] = supported.value(0, 0, "eax")
        b.levels["min-xlevel"] = supported.value(0x80000000, 0, "eax")


def _dependencies(b: _Build) -> None:
    """Step 4: a feature whose prerequisite is off is removed (filtered if the user asked for it)."""
    for d in b.data.dependencies:
        if not b.feats.get(d.src, 0) & d.src_mask:
            gone = b.feats.get(d.dst, 0) & d.dst_mask
            if gone:
                b.filtered[d.dst] |= gone & b.user[d.dst]
                b.feats[d.dst] &= ~gone
                src = _names(b.data, d.src, d.src_mask)
                b.trace.append(TraceEvent("dependency", d.dst, gone, 0, f"depends on {src}, which is off"))


def _kvm_only_and_xsave(b: _Build, supp: Mapping[str, int]) -> None:
    """Step 5: FEAT_KVM cleared unless KVM (and kvm=on); XSAVE component words from the features."""
    for w in b.data.kvm_only_words:
        if b.accel != "kvm" or not b.expose_kvm:
            if b.feats[w]:
                b.trace.append(TraceEvent("kvm-only", w, b.feats[w], 0, "FEAT_KVM is cleared unless accel=kvm (and kvm=on)"))
            b.feats[w] = 0
    _xsave_words(b.data, b.feats, supp)


def _levels(b: _Build) -> dict[str, int]:
    """Step 6: min levels raised by the words (before filtering, as QEMU does); explicit levels win."""
    for k in ("min-level", "min-xlevel", "min-xlevel2"):
        if k in b.level_user:
            b.levels[k] = b.level_user[k]
    _adjust_levels(b.data, b.feats, b.levels, auto=b.full_auto_level, intel_pt_auto=b.intel_pt_auto_level)
    if b.full_auto_level and not b.intel_pt_auto_level:
        pt = b.data.feature("intel-pt")
        if pt and b.feats.get(pt[0], 0) & pt[1] and b.levels["min-level"] < 0x14:
            # x-intel-pt-auto-level=off: intel-pt is unavailable unless min-level >= 0x14
            b.filtered[pt[0]] |= pt[1] & b.user[pt[0]]
            b.feats[pt[0]] &= ~pt[1]
            b.trace.append(TraceEvent("dependency", pt[0], pt[1], 0, "x-intel-pt-auto-level=off and min-level < 0x14"))
    return {
        "level": b.level_user.get("level", b.levels["min-level"]),
        "xlevel": b.level_user.get("xlevel", b.levels["min-xlevel"]),
        "xlevel2": b.level_user.get("xlevel2", b.levels["min-xlevel2"]),
        "level-func7": b.level_user.get("level-func7", b.levels["min-level-func7"]),
    }


def _filter(b: _Build, supp: Mapping[str, int]) -> None:
    """Step 7: what the accelerator does not support goes to filtered-features."""
    for w in b.data.words.values():
        gone = b.feats[w.name] & ~supp[w.name] & 0xFFFFFFFF
        if gone:
            b.filtered[w.name] |= gone
            b.feats[w.name] &= ~gone
            b.trace.append(TraceEvent("filter", w.name, gone, 0, "not supported by TCG in this QEMU version"
                                      if b.accel == "tcg" else "not in KVM's supported table (after QEMU's fix-ups)"))


def _amd_aliases(b: _Build) -> None:
    """Step 8: AMD CPUID[8000_0001].EDX aliases copied from CPUID[1].EDX."""
    if b.vendor == "AuthenticAMD" and "FEAT_8000_0001_EDX" in b.feats:
        b.feats["FEAT_8000_0001_EDX"] = (b.feats["FEAT_8000_0001_EDX"] & ~b.data.amd_aliases) | (
            b.feats["FEAT_1_EDX"] & b.data.amd_aliases)


def _names(data: VersionData, word: str, mask: int) -> str:
    w = data.words[word]
    return ", ".join(w.names[b] or f"bit {b}" for b in range(32) if mask >> b & 1) or word


def _prop_on(line: CpuLine, prop: str, default: bool) -> bool:
    settings, plus, minus, _ = effective_settings(line.flags)
    on = default
    for name, value in settings:
        if name == prop:
            on = bool_value_str(value)
    if prop in plus:
        on = True
    if prop in minus:
        on = False
    return on


def guest_visible(configured: CpuidTable, series: str | VersionData, accel: str, cpu_line: str | CpuLine, *,
                  mode: str | None = None, vendor: str | None = None) -> CpuidTable:
    """What a guest reads of QEMU's configured feature words (``cpu_x86_cpuid``'s guest rules).

    E.g. leaf 0xD reads zeros without XSAVE, 0x8000000A without SVM, PDCM is
    hidden unless ``pmu=on``; QEMU 10.0's TCG hides SYSCALL from an Intel guest
    outside long mode.  Rules bound to CPU modes apply only when ``mode`` (the
    probe's: real, prot32, long64, user) is one of theirs; rules bound to a
    vendor only when ``vendor`` is known and equal.  Registers the rules do not
    touch are copied.
    """
    data = series if isinstance(series, VersionData) else version_data(series)
    line = cpu_line if isinstance(cpu_line, CpuLine) else CpuLine.parse(cpu_line)
    out = configured.copy()

    def has(name: str) -> bool:
        f = data.feature(name)
        if f is None:
            return False
        w = data.words[f[0]]
        return bool(configured.value(w.leaf, w.subleaf or 0, w.reg) & f[1])

    for g in data.guest_rules:
        if (g.tcg_only and accel != "tcg") or (g.modes and mode not in g.modes) or \
                (g.vendor is not None and vendor != g.vendor):
            continue
        if g.leaf is not None:
            if (g.unless and has(g.unless)) and not (g.kvm_only and accel != "kvm"):
                continue
            for (leaf, sub), regs in configured.items():
                if leaf == g.leaf:
                    out.set(leaf, sub, type(regs)(*(None if v is None else 0 for v in regs.as_tuple())))
        elif g.clear:
            if g.unless_prop and _prop_on(line, g.unless_prop, line.model in g.default_on):
                continue
            for n in g.clear:
                f = data.feature(n)
                if f is None:
                    continue
                w = data.words[f[0]]
                v = out.reg(w.leaf, w.subleaf or 0, w.reg)
                if v is not None:
                    out.set_reg(w.leaf, w.subleaf or 0, w.reg, v & ~f[1])
    return out


def bool_value_str(value: str) -> bool:
    from .cpuline import CpuFlag

    b = bool_value(CpuFlag("x", "=", value))
    if b is None:
        raise QemuModelError(f"-cpu: {value!r} is not on/off")
    return b


def feature_names(data: VersionData, word: WordDef, value: int) -> list[str]:
    return [word.names[b] or f"bit{b}" for b in range(32) if value >> b & 1]


def model_names(facts: ModelFacts, *, include_aliases: bool = True) -> list[str]:
    return sorted(n for n, d in _definition_names(facts).items() if include_aliases or not _alias_of(d))
