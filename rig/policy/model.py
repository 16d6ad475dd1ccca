"""Typed KVM feature policies: what one kernel version's KVM does with CPUID.

A policy file (``rig/policy/data/linux-VER.json``) is produced by
``rig policy import`` from a kernel tree; rules too irregular to import live in
``linux-VER.overlay.json`` (hand-written, each with its kernel source location)
and are merged at load.  A *variant* file (``"variant_of"``) is a hand-written
copy of another policy with a few fields changed, e.g. the TSA pre-fix
``SYNTHESIZED_F`` semantics; it says which commits it models.

Vocabulary (kernel names, see arch/x86/kvm/cpuid.c):

* words: ``enum cpuid_leafs`` (kernel words, ``kernel: true``) and
  ``enum kvm_only_cpuid_leafs`` (KVM-only words), located by ``reverse_cpuid[]``;
* features: ``X86_FEATURE_*`` from cpufeatures.h (kernel position) and, for
  KVM-only or translated features, their KVM word/bit (reverse_cpuid.h);
* steps: the statements of ``kvm_set_cpu_caps()`` / ``kvm_initialize_cpu_caps()``
  and of the vendor functions (``svm_set_cpu_caps``, ``sev_set_cpu_caps``,
  ``vmx_set_cpu_caps``) in order, each with a condition (see :mod:`.cond`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cpuid.table import REGISTERS
from ..errors import RigError
from . import cond

FORMAT = "rig-kvm-policy/1"
OVERLAY_FORMAT = "rig-kvm-policy-overlay/1"

#: step operations
OPS = ("init", "mask", "init_kvm_defined", "set", "clear", "check_and_set", "call")
#: feature macros of both eras
MACROS = (
    "F", "SCATTERED_F", "X86_64_F", "EMULATED_F", "SYNTHESIZED_F", "PASSTHROUGH_F",
    "ALIASED_1_EDX_F", "VENDOR_F", "RUNTIME_F", "SF",
)


class PolicyError(RigError):
    pass


@dataclass(frozen=True)
class Word:
    name: str
    index: int
    kernel: bool  # True for enum cpuid_leafs (< NCAPINTS), False for KVM-only words
    leaf: int | None = None  # None for Linux-defined words (CPUID_LNX_*)
    subleaf: int = 0
    reg: str | None = None


@dataclass(frozen=True)
class Feature:
    name: str  # X86_FEATURE_ suffix
    word: str  # kernel word (cpufeatures.h) or KVM-only word (reverse_cpuid.h)
    bit: int
    cpuinfo: str | None = None  # name in /proc/cpuinfo (None when hidden)
    kvm_word: str | None = None  # where KVM puts it, when translated (__feature_translate)
    kvm_bit: int | None = None
    kernel: bool = True  # False: defined only by KVM (no kernel capability exists)

    @property
    def cap_word(self) -> str:
        return self.kvm_word or self.word

    @property
    def cap_bit(self) -> int:
        return self.kvm_bit if self.kvm_bit is not None else self.bit


@dataclass(frozen=True)
class Bug:
    name: str
    bit: int
    cpuinfo: str | None = None


@dataclass(frozen=True)
class Scattered:
    feature: str
    leaf: int
    subleaf: int
    reg: str
    bit: int


@dataclass(frozen=True)
class Step:
    op: str
    src: str
    word: str | None = None
    features: tuple[tuple[str, str], ...] = ()  # (macro, feature) for init/mask/init_kvm_defined
    feature: str | None = None  # for set/clear/check_and_set
    cond: str | None = None  # condition text; None = unconditional
    function: str | None = None  # for call
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op}
        if self.word is not None:
            d["word"] = self.word
        if self.features:
            d["features"] = [[m, f] for m, f in self.features]
        if self.feature is not None:
            d["feature"] = self.feature
        if self.cond is not None:
            d["if"] = self.cond
        if self.function is not None:
            d["function"] = self.function
        if self.note is not None:
            d["note"] = self.note
        d["src"] = self.src
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> Step:
        op = d.get("op")
        if op not in OPS:
            raise PolicyError(f"{where}: unknown step op {op!r}")
        feats = tuple((str(m), str(f)) for m, f in d.get("features", []))
        for m, _f in feats:
            if m not in MACROS:
                raise PolicyError(f"{where}: unknown macro {m!r}")
        if d.get("if") is not None:
            cond.parse(d["if"], where)
        return cls(op=op, src=str(d.get("src", "?")), word=d.get("word"), features=feats,
                   feature=d.get("feature"), cond=d.get("if"), function=d.get("function"), note=d.get("note"))


@dataclass(frozen=True)
class Variable:
    """A KVM global that rules test, e.g. ``nested`` (kvm_amd module parameter)."""

    name: str
    module: str | None  # kvm, kvm_amd, kvm_intel; None for derived variables
    param: str | None
    default: str | None
    requires: str | None  # condition that hardware setup enforces (value forced off otherwise)
    value: str | None  # derived variables: condition giving the value
    src: str
    note: str | None = None


@dataclass
class Policy:
    version: str
    era: str  # "cap_init" (6.14+) or "cap_mask" (before)
    synthesized: str | None  # "fixed", "prefix" or None (no SYNTHESIZED_F in this era)
    source: dict[str, Any]
    words: dict[str, Word]
    features: dict[str, Feature]
    bugs: dict[str, Bug]
    scattered: list[Scattered]
    common: list[Step]
    common_function: str
    vendors: dict[str, list[Step]]
    leaves: dict[str, Any]
    kvm_features: dict[str, int]
    kvm_features_conditional: dict[str, str]
    cpuinfo_rule: str  # "quoted-only" (6.11+) or "unless-empty-quotes" (older)
    #: module group ("kvm", "svm", "vmx") -> C variable -> {module, param, default, src}
    module_params: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    variables: dict[str, Variable] = field(default_factory=dict)
    expressions: dict[str, dict[str, str]] = field(default_factory=dict)
    hand_written: bool = False
    description: str = ""
    commits: dict[str, str] = field(default_factory=dict)
    variant_of: str | None = None
    notes: list[str] = field(default_factory=list)
    _by_cpuinfo: dict[str, str] = field(default_factory=dict, repr=False)
    _by_loc: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for f in self.features.values():
            if f.cpuinfo:
                self._by_cpuinfo.setdefault(f.cpuinfo, f.name)
            self._by_loc.setdefault((f.cap_word, f.cap_bit), f.name)

    # -- lookups ------------------------------------------------------------
    def feature(self, name: str) -> Feature:
        n = name.upper().removeprefix("X86_FEATURE_").replace("-", "_")
        if n in self.features:
            return self.features[n]
        by = self._by_cpuinfo.get(name.lower())
        if by:
            return self.features[by]
        raise PolicyError(f"linux-{self.version} policy: unknown feature {name!r} (see `rig policy show {self.version}`)")

    def find_feature(self, name: str) -> Feature | None:
        try:
            return self.feature(name)
        except PolicyError:
            return None

    def feature_at(self, word: str, bit: int) -> str | None:
        return self._by_loc.get((word, bit))

    def word_at(self, leaf: int, subleaf: int, reg: str) -> Word | None:
        for w in self.words.values():
            if w.leaf == leaf and w.subleaf == subleaf and w.reg == reg:
                return w
        return None

    def by_cpuinfo(self, name: str) -> str | None:
        return self._by_cpuinfo.get(name)

    def location(self, feature: str) -> tuple[int, int, str, int] | None:
        f = self.features[feature]
        w = self.words.get(f.cap_word)
        if w is None or w.leaf is None or w.reg is None:
            return None
        return (w.leaf, w.subleaf, w.reg, f.cap_bit)

    @property
    def label(self) -> str:
        return f"linux-{self.version}" + (" (hand-written variant)" if self.hand_written else "")

    # -- JSON ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The importer's output (overlay fields are not included)."""
        return {
            "format": FORMAT,
            "version": self.version,
            "source": self.source,
            "era": self.era,
            "synthesized": self.synthesized,
            "cpuinfo_rule": self.cpuinfo_rule,
            "words": {
                n: {"index": w.index, "kernel": w.kernel, "leaf": None if w.leaf is None else f"0x{w.leaf:x}",
                    "subleaf": w.subleaf, "reg": w.reg}
                for n, w in sorted(self.words.items(), key=lambda kv: kv[1].index)
            },
            "features": {
                n: {k: v for k, v in (("word", f.word), ("bit", f.bit), ("cpuinfo", f.cpuinfo),
                                      ("kvm_word", f.kvm_word), ("kvm_bit", f.kvm_bit),
                                      ("kernel", None if f.kernel else False)) if v is not None}
                for n, f in sorted(self.features.items())
            },
            "bugs": {n: {"bit": b.bit, "cpuinfo": b.cpuinfo} for n, b in sorted(self.bugs.items())},
            "scattered": [[s.feature, f"0x{s.leaf:x}", s.subleaf, s.reg, s.bit] for s in self.scattered],
            "common_function": self.common_function,
            "common": [s.to_json() for s in self.common],
            "vendors": {v: [s.to_json() for s in steps] for v, steps in sorted(self.vendors.items())},
            "leaves": self.leaves,
            "kvm_features": self.kvm_features,
            "kvm_features_conditional": self.kvm_features_conditional,
            "module_params": self.module_params,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"


def _int(v: Any) -> int:
    return v if isinstance(v, int) else int(str(v), 0)


def policy_from_json(d: dict[str, Any], where: str) -> Policy:
    if d.get("format") != FORMAT:
        raise PolicyError(f"{where}: not a KVM policy file (format {d.get('format')!r}, expected {FORMAT!r})")
    try:
        words = {
            n: Word(n, int(w["index"]), bool(w["kernel"]), None if w.get("leaf") is None else _int(w["leaf"]),
                    int(w.get("subleaf", 0)), w.get("reg"))
            for n, w in d["words"].items()
        }
        features = {
            n: Feature(n, f["word"], int(f["bit"]), f.get("cpuinfo"), f.get("kvm_word"), f.get("kvm_bit"),
                       bool(f.get("kernel", True)))
            for n, f in d["features"].items()
        }
        bugs = {n: Bug(n, int(b["bit"]), b.get("cpuinfo")) for n, b in d.get("bugs", {}).items()}
        scattered = [Scattered(s[0], _int(s[1]), int(s[2]), s[3], int(s[4])) for s in d.get("scattered", [])]
        common = [Step.from_json(s, f"{where}: common[{i}]") for i, s in enumerate(d["common"])]
        vendors = {
            v: [Step.from_json(s, f"{where}: vendors.{v}[{i}]") for i, s in enumerate(steps)]
            for v, steps in d.get("vendors", {}).items()
        }
        pol = Policy(
            version=str(d["version"]), era=d["era"], synthesized=d.get("synthesized"), source=dict(d.get("source", {})),
            words=words, features=features, bugs=bugs, scattered=scattered, common=common,
            common_function=d.get("common_function", "kvm_set_cpu_caps"), vendors=vendors,
            leaves=dict(d.get("leaves", {})), kvm_features=dict(d.get("kvm_features", {})),
            kvm_features_conditional=dict(d.get("kvm_features_conditional", {})),
            cpuinfo_rule=d.get("cpuinfo_rule", "quoted-only"),
            module_params={g: dict(v) for g, v in d.get("module_params", {}).items()},
        )
    except KeyError as e:
        raise PolicyError(f"{where}: malformed policy: missing {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as e:
        raise PolicyError(f"{where}: malformed policy: {e}") from None
    validate(pol, where)
    return pol


def apply_overlay(p: Policy, o: dict[str, Any], where: str) -> None:
    """Merge a hand-written overlay (variables, expressions, leaf extras, notes)."""
    if not isinstance(o, dict) or o.get("format") != OVERLAY_FORMAT:
        o = o if isinstance(o, dict) else {}
        raise PolicyError(f"{where}: not a policy overlay (format {o.get('format')!r}, expected {OVERLAY_FORMAT!r})")
    try:
        _merge_overlay(p, o, where)
    except KeyError as e:
        raise PolicyError(f"{where}: malformed policy overlay: missing {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise PolicyError(f"{where}: malformed policy overlay: {e}") from None
    validate(p, where)


def _merge_overlay(p: Policy, o: dict[str, Any], where: str) -> None:
    for name, v in o.get("variables", {}).items():
        if name in p.variables and not v.get("value"):
            old = p.variables[name]
            v = {"module": old.module, "param": old.param, "default": old.default, "requires": old.requires,
                 "src": old.src, "note": old.note, **{k: x for k, x in v.items() if x is not None}}
        for key in ("requires", "value"):
            if v.get(key):
                cond.parse(v[key], f"{where}: variables.{name}.{key}")
        p.variables[name] = Variable(
            name=name, module=v.get("module"), param=v.get("param"), default=v.get("default"),
            requires=v.get("requires"), value=v.get("value"), src=v.get("src", "?"), note=v.get("note"),
        )
    for text, e in o.get("expressions", {}).items():
        cond.parse(e.get("means"), f"{where}: expressions[{text!r}]")
        p.expressions[text] = {"means": e["means"], "src": e.get("src", "?"), "note": e.get("note", "")}
    for k, v in o.get("leaves", {}).items():
        p.leaves[k] = v
    p.notes.extend(o.get("notes", []))


# -- types at the edge: a policy file that parses as JSON but holds a wrong type fails here, in one line ----------

_HEX = re.compile(r"^0[xX][0-9a-fA-F]+$")
#: leaves: key -> (check, what it must be); keys not listed are kept unchecked (no rule reads them)
_LEAF_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{k: ((lambda v: _is_int(v) and 0 <= v <= 0xFFFFFFFF), "a 32-bit integer") for k in (
        "max_basic", "leaf7_max_subleaf", "max_extended", "ext_raise_min", "ext_raise_to", "leaf1e_max_subleaf",
        "leaf24_max_subleaf", "avx10_version_max", "pmu_version_max", "pmu_max_gp", "pmu_max_fixed")},
    **{k: ((lambda v: isinstance(v, str) and bool(_HEX.match(v))), "a hex string such as \"0x602ff\"") for k in (
        "xcr0_mask", "xss_mask", "kernel_xfeatures")},
    **{k: ((lambda v: isinstance(v, str)), "a string") for k in ("src", "ext7_edx", "ext21_ebx", "xtile_filter")},
    "g_phys_as": ((lambda v: isinstance(v, bool) or v == "legacy"), "true, false or \"legacy\" (before 5.18)"),
    "cases": ((lambda v: isinstance(v, list) and all(isinstance(x, str) and _HEX.match(x) for x in v)),
              "a list of hex leaf strings"),
    "override_words": ((lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)), "a list of word names"),
    "xfeature_needs": ((lambda v: isinstance(v, dict) and all(
        k.isdigit() and int(k) < 64 and isinstance(x, str) for k, x in v.items())),
        "an object of xfeature bit (0-63) to feature name"),
    "xcr0_vendor_clear": ((lambda v: isinstance(v, dict) and all(
        isinstance(x, dict) and isinstance(x.get("mask"), str) and _HEX.match(x["mask"])
        and isinstance(x.get("if"), str | None) and isinstance(x.get("src"), str) for x in v.values())),
        "an object of vendor to {mask, if, src}"),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def validate(p: Policy, where: str) -> None:
    """Every field the evaluator reads has the type it expects; else :class:`PolicyError` naming the field."""
    def need(ok: bool, what: str, expected: str) -> None:
        if not ok:
            raise PolicyError(f"{where}: malformed policy: {what} must be {expected}")

    need(p.era in ("cap_init", "cap_mask"), "era", '"cap_init" or "cap_mask"')
    need(p.synthesized in (None, "fixed", "prefix"), "synthesized", 'null, "fixed" or "prefix"')
    need(isinstance(p.cpuinfo_rule, str), "cpuinfo_rule", "a string")
    need(isinstance(p.common_function, str), "common_function", "a string")
    for n, w in p.words.items():
        need(w.reg is None or w.reg in REGISTERS, f"words.{n}.reg", "null or one of eax, ebx, ecx, edx")
        need(w.leaf is None or 0 <= w.leaf <= 0xFFFFFFFF, f"words.{n}.leaf", "null or a 32-bit leaf")
        need(0 <= w.subleaf <= 0xFFFFFFFF, f"words.{n}.subleaf", "a 32-bit subleaf")
    for n, f in p.features.items():
        need(isinstance(f.word, str) and isinstance(f.kvm_word, str | None), f"features.{n}.word", "a word name")
        need(0 <= f.bit < 32 and (f.kvm_bit is None or _is_int(f.kvm_bit) and 0 <= f.kvm_bit < 32),
             f"features.{n}.bit", "a bit number 0-31")
        need(_opt_str(f.cpuinfo), f"features.{n}.cpuinfo", "null or a string")
    for n, b in p.bugs.items():
        need(0 <= b.bit and _opt_str(b.cpuinfo), f"bugs.{n}", "{bit >= 0, cpuinfo: null or a string}")
    for i, sc in enumerate(p.scattered):
        need(isinstance(sc.feature, str) and sc.reg in REGISTERS and 0 <= sc.bit < 32
             and 0 <= sc.leaf <= 0xFFFFFFFF and 0 <= sc.subleaf <= 0xFFFFFFFF,
             f"scattered[{i}]", "[feature, leaf, subleaf, register, bit 0-31]")
    for where_steps, steps in (("common", p.common), *((f"vendors.{v}", s) for v, s in p.vendors.items())):
        for i, st in enumerate(steps):
            need(all(_opt_str(x) for x in (st.word, st.feature, st.cond, st.function, st.note)),
                 f"{where_steps}[{i}]", "a step whose word, feature, if, function and note are strings")
    need(all(isinstance(k, str) and _is_int(v) and 0 <= v < 32 for k, v in p.kvm_features.items()),
         "kvm_features", "an object of name to bit 0-31")
    need(all(isinstance(v, str) for v in p.kvm_features_conditional.values()),
         "kvm_features_conditional", "an object of name to condition string")
    need(all(isinstance(g, dict) and all(isinstance(x, dict) and all(_opt_str(y) for y in x.values())
                                         for x in g.values()) for g in p.module_params.values()),
         "module_params", "an object of group to variable to {module, param, default, src} strings")
    for k, (ok, expected) in _LEAF_KEYS.items():
        if k in p.leaves:
            need(ok(p.leaves[k]), f"leaves.{k}", expected)
    for n, v in p.variables.items():
        need(all(_opt_str(x) for x in (v.module, v.param, v.default, v.requires, v.value, v.src, v.note)),
             f"variables.{n}", "an object of strings")
    for t, e in p.expressions.items():
        need(all(isinstance(e.get(x), str) for x in ("means", "src", "note")), f"expressions[{t!r}]",
             "{means, src, note} strings")
    need(isinstance(p.notes, list) and all(isinstance(x, str) for x in p.notes), "notes", "a list of strings")
