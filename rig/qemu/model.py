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
   ``x2apic=on``, ``acpi/monitor/svm=off``);
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

Facts come from ``rig/qemu/data`` (see :mod:`rig.qemu.facts`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..cpuid.table import CpuidTable
from ..errors import RigError
from .cpuline import CpuLine, bool_value, effective_settings
from .facts import VersionData, WordDef, version_data

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
        lines.append(f"{'configured':<13} {feature} = {int(bool(final))}  ({loc}; "
                     f"{'in filtered-features' if filt else 'not filtered'})")
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
                "resolved_model": self.resolved_model, "vendor": self.vendor, "notes": list(self.notes)}


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


def _adjust_levels(data: VersionData, feats: dict[str, int], levels: dict[str, int], auto: bool) -> None:
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
    :class:`QemuModelError` for flags it does not know.
    """
    if accel not in ACCELS:
        raise QemuModelError(f"accelerator {accel!r} is not modelled (expected tcg or kvm)")
    if accel == "kvm" and supported is None:
        raise QemuModelError("a KVM prediction needs the KVM supported table",
                             hint="pass a host profile's KVM_GET_SUPPORTED_CPUID or rig.policy.predict_supported(...).table")
    line = cpu_line if isinstance(cpu_line, CpuLine) else CpuLine.parse(cpu_line)
    data = version_data(tuple(qemu_facts.version))
    notes: list[str] = []
    if data.approximate:
        notes.append(f"QEMU {data.requested} modelled with the facts of QEMU {data.series}")
    mver = data.machine_version(machine)
    if irqchip is None:
        irqchip = data.default_irqchip(machine)
    if mver == "legacy":
        notes.append(f"machine {machine}: CPU_VERSION_LEGACY (v1 features); its compat properties are not modelled")
    resolved = resolve_model(qemu_facts, line.model, mver)
    exp = qemu_facts.static.get(resolved)
    if exp is None:
        raise QemuModelError(f"no static expansion of {resolved!r} in the facts of {getattr(qemu_facts, 'binary', 'QEMU')}",
                             hint="re-gather the binary's facts (rig.qemu.binaries.gather_facts with use_cache=False)")
    props = exp.props if hasattr(exp, "props") else dict(exp["model"]["props"])
    feats = _words_from_props(data, props)
    if resolved != line.model:
        why = ("the latest version (x86_cpus_init(CPU_VERSION_LATEST))" if mver == "latest"
               else "version 1 (default_cpu_version = 1)")
        notes.append(f"machine {machine.split(',')[0]}: {line.model} resolves to {resolved}, {why}")
    other_versions: dict[str, dict[str, int]] = {}
    if resolved != line.model and not re.search(r"-v\d+$", line.model):
        for name, exp2 in qemu_facts.static.items():
            if re.fullmatch(re.escape(line.model) + r"-v\d+", name) and name != resolved:
                p2 = exp2.props if hasattr(exp2, "props") else dict(exp2["model"]["props"])
                other_versions[name] = _words_from_props(data, p2)
    trace: list[TraceEvent] = [TraceEvent("model", w, v, 1, f"model {resolved} (static expansion)")
                               for w, v in feats.items() if v]
    is_max = line.model in MAX_MODELS
    vendor = props.get("vendor") if isinstance(props.get("vendor"), str) else None
    if accel == "kvm" and data.kvm_vendor_from_host and line.model not in MAX_MODELS:
        host_vendor = (host_raw.vendor if host_raw is not None else None) or (
            supported.vendor if supported is not None else None)
        if host_vendor:
            vendor = host_vendor
        else:
            notes.append("host vendor unknown (no host CPUID, no leaf 0 in the supported table): kept the model's")
    base_def = data.models.get(_base_name(resolved))
    levels = {"min-level": 0, "min-xlevel": 0, "min-xlevel2": 0, "min-level-func7": 0}
    if base_def is not None:
        levels["min-level"], levels["min-xlevel"] = base_def.level, base_def.xlevel
    elif is_max:
        pass  # max/host have no definition: min levels start at 0 (KVM: the supported table's, below)
    else:
        levels["min-level"] = int(props.get("min-level", 0) or 0)
        levels["min-xlevel"] = int(props.get("min-xlevel", 0) or 0)
        levels["min-xlevel2"] = int(props.get("min-xlevel2", 0) or 0)

    # 2. accelerator defaults: undo the facts' accelerator, apply the case's
    facts_accel = getattr(qemu_facts, "accel", "tcg")
    if not is_max:
        if facts_accel == "tcg" and accel != "tcg":
            for n in data.tcg_default_props:
                if n == "vme" and base_def is not None:
                    _set(feats, data, n, base_def.vme, None, trace, "model",
                         f"{n}: the model definition's value (TCG facts show tcg_default_props)")
                else:
                    notes.append(f"{n}: the model's own value is unknown from TCG facts; kept as {n}=off")
        elif facts_accel not in ("tcg", accel):
            raise QemuModelError(f"facts taken under accel {facts_accel!r} cannot model accel {accel!r}",
                                 hint="gather facts with accel='tcg'")
        defaults = data.tcg_default_props if accel == "tcg" else dict(data.kvm_default_props)
        if accel == "kvm" and irqchip == "off":
            defaults["x2apic"] = False
        elif accel == "kvm" and irqchip == "split":
            defaults["kvm-msi-ext-dest-id"] = True
        for n, v in defaults.items():
            _set(feats, data, n, bool(v), None, trace, "accel-default",
                 f"{n}={'on' if v else 'off'}: {accel} default property")
    for n in data.always_on:
        _set(feats, data, n, True, None, trace, "always-on", f"{n}: always set by x86_cpu_load_model")

    # 3. -cpu properties, then +f, then -f
    user = {w: 0 for w in data.words}
    settings, plus, minus, warnings = effective_settings(line.flags)
    notes.extend(warnings)
    level_user: dict[str, int] = {}
    expose_kvm = True
    for name, value in settings:
        if name in LEVEL_PROPS:
            try:
                level_user[LEVEL_PROPS[name]] = int(value, 0)
            except ValueError:
                raise QemuModelError(f"-cpu {line}: {name}={value!r} is not a number") from None
            continue
        f = data.feature(name)
        if f is None:
            if name in OTHER_PROPS or name.startswith(("hv-", "vmx-", "x-")):
                if name == "kvm":
                    expose_kvm = bool_value_str(value)
                elif name == "vendor":
                    vendor = value
                else:
                    notes.append(f"{name}={value}: not a CPUID feature word property (not modelled)")
                continue
            raise QemuModelError(f"-cpu {line}: QEMU {data.series} has no CPU property {name!r}",
                                 hint="see `rig features` for QEMU feature names")
        on = bool_value_str(value)
        _set(feats, data, name, on, user, trace, "property", f"-cpu {name}={value}")
    for name, on in [(n, True) for n in plus] + [(n, False) for n in minus]:
        if not _set(feats, data, name, on, user, trace, "plus" if on else "minus",
                    f"-cpu {'+' if on else '-'}{name} (applied after every f=on|off)"):
            if name.startswith(("hv-", "vmx-")) or name in OTHER_PROPS:
                notes.append(f"{'+' if on else '-'}{name}: not a CPUID feature word property (not modelled)")
                continue
            raise QemuModelError(f"-cpu {line}: QEMU {data.series} has no CPU feature {name!r}",
                                 hint="see `rig features` for QEMU feature names")

    # accelerator's supported words
    if accel == "tcg":
        supp = {w.name: w.tcg for w in data.words.values()}
    else:
        assert supported is not None
        supp = _kvm_supported(data, supported, host_raw, irqchip, notes)
    for n in data.unavailable:
        w, m = data.feature(n)  # type: ignore[misc]
        supp[w] &= ~m

    if is_max:
        # x86_cpu_expand_features: max_features adds every supported (migratable) feature not set by the user
        for w in data.words.values():
            if accel == "tcg":
                continue  # the TCG facts' expansion of max already is tcg & migratable & ~no_autoenable
            add = supp[w.name] & w.migratable_mask() & ~user[w.name] & ~w.no_autoenable
            feats[w.name] |= add
            if add:
                trace.append(TraceEvent("max", w.name, add, 1, "max/host: every supported feature not set by the user"))
        if accel == "kvm":
            levels["min-level"] = supported.value(0, 0, "eax") if supported is not None else levels["min-level"]
            levels["min-xlevel"] = supported.value(0x80000000, 0, "eax") if supported is not None else levels["min-xlevel"]
            vendor = supported.vendor if supported is not None else vendor
    filtered = {w: 0 for w in data.words}

    # 4. dependencies
    for d in data.dependencies:
        if not feats.get(d.src, 0) & d.src_mask:
            gone = feats.get(d.dst, 0) & d.dst_mask
            if gone:
                filtered[d.dst] |= gone & user[d.dst]
                feats[d.dst] &= ~gone
                src = _names(data, d.src, d.src_mask)
                trace.append(TraceEvent("dependency", d.dst, gone, 0, f"depends on {src}, which is off"))

    # 5. FEAT_KVM, XSAVE components
    for w in data.kvm_only_words:
        if accel != "kvm" or not expose_kvm:
            if feats[w]:
                trace.append(TraceEvent("kvm-only", w, feats[w], 0, "FEAT_KVM is cleared unless accel=kvm (and kvm=on)"))
            feats[w] = 0
    _xsave_words(data, feats, supp)

    # 6. levels (before filtering, as QEMU does)
    for k in ("min-level", "min-xlevel", "min-xlevel2"):
        if k in level_user:
            levels[k] = level_user[k]
    _adjust_levels(data, feats, levels, auto=True)
    out_levels = {
        "level": level_user.get("level", levels["min-level"]),
        "xlevel": level_user.get("xlevel", levels["min-xlevel"]),
        "xlevel2": level_user.get("xlevel2", levels["min-xlevel2"]),
        "level-func7": level_user.get("level-func7", levels["min-level-func7"]),
    }
    requested = _table(data, feats)

    # 7. filter against the accelerator
    for w in data.words.values():
        gone = feats[w.name] & ~supp[w.name] & 0xFFFFFFFF
        if gone:
            filtered[w.name] |= gone
            feats[w.name] &= ~gone
            trace.append(TraceEvent("filter", w.name, gone, 0, "not supported by TCG in this QEMU version"
                                    if accel == "tcg" else "not in KVM's supported table (after QEMU's fix-ups)"))

    # 8. AMD aliases
    if vendor == "AuthenticAMD" and "FEAT_8000_0001_EDX" in feats:
        feats["FEAT_8000_0001_EDX"] = (feats["FEAT_8000_0001_EDX"] & ~data.amd_aliases) | (
            feats["FEAT_1_EDX"] & data.amd_aliases)
    return QemuPrediction(_table(data, feats), _table(data, filtered), out_levels, resolved, vendor, notes, requested,
                          data.series, accel, str(line), trace, other_versions)


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



def predict_case(case: Any, qemu_version: str | None = None, expansion: dict | None = None) -> CpuidTable:
    """Predicted configured feature words for a matrix case (see :mod:`rig.qemu.casepredict`)."""
    from .casepredict import predict_case as _predict_case

    return _predict_case(case, qemu_version, expansion)


def predict_case_views(case: Any, qemu_version: str | None = None,
                       expansion: dict | None = None) -> tuple[CpuidTable, CpuidTable]:
    """Predicted configured feature words and filtered features for a matrix case
    (see :func:`rig.qemu.casepredict.predict_case_views`)."""
    from .casepredict import predict_case_views as _views

    return _views(case, qemu_version, expansion)
