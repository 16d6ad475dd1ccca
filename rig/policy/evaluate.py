"""Evaluate a policy's capability steps: the ``kvm_cpu_caps[]`` words KVM builds.

Exact semantics of both macro eras (arch/x86/kvm/cpuid.c):

* 6.14+ ``kvm_cpu_cap_init(word, ...)``: four masks start at zero (features,
  passthrough, synthesized, emulated); then ``caps = features``; kernel words
  ``caps &= kernel caps``; ``caps |= passthrough``; ``caps &= raw | synthesized``;
  ``caps |= emulated``.  Raw is 0 when the host's max leaf of that range is
  below the word's function.
* before 6.14: ``kvm_cpu_caps`` starts as a copy of the kernel's caps;
  ``kvm_cpu_cap_mask(word, mask)``: ``caps &= mask & raw``;
  ``kvm_cpu_cap_init_kvm_defined(word, mask)``: ``caps = mask & raw``;
  ``SF(x)`` contributes only when the kernel has ``x``.
* ``kvm_cpu_cap_set/clear/check_and_set`` and conditional fix-ups, then the
  vendor module's function (``svm_set_cpu_caps``/``vmx_set_cpu_caps``), which
  calls the common function first.

Every bit's journey is recorded as :class:`TraceStep` items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..cpuid.table import CpuidTable
from . import cond
from .importer_c import CONFIG_ON
from .kernelcaps import KernelCaps, raw_bit
from .model import Policy, Step, Variable

TRUTHY = {"y", "yes", "1", "true", "on"}


@dataclass(frozen=True)
class TraceStep:
    layer: str  # raw, kernel caps, macro, fix-up, vendor module, leaf rule, supported
    text: str
    src: str | None = None
    value: int | None = None  # the bit after this step, when known


@dataclass
class CapsResult:
    caps: dict[str, int]
    trace: dict[tuple[str, int], list[TraceStep]]
    variables: dict[str, tuple[bool, str]]
    vendor: str | None
    notes: list[str] = field(default_factory=list)

    def has(self, policy: Policy, feature: str) -> bool:
        f = policy.features.get(feature)
        if f is None:
            return False
        return bool(self.caps.get(f.cap_word, 0) >> f.cap_bit & 1)


def param_true(value: str) -> bool:
    v = value.strip().lower()
    if v in TRUTHY:
        return True
    try:
        return int(v, 0) != 0
    except ValueError:
        return False


def out_of_range_read(raw: CpuidTable, leaf: int, subleaf: int, reg: str, mode: str) -> int:
    """What CPUID returns for a leaf above its range's maximum.

    ``intel``: the highest basic leaf's data (Intel SDM, CPUID "invalid input"; also what QEMU TCG does for
    every vendor: target/i386/cpu.c cpu_x86_cpuid() replaces the index by cpuid_level, keeping the subleaf);
    ``zero``: AMD hardware returns zeros.
    """
    if mode == "intel":
        return raw.value(raw.max_basic, subleaf, reg)
    return 0


def vendor_of(raw: CpuidTable, vendor_module: str | None) -> str | None:
    if vendor_module == "kvm_amd":
        return "svm"
    if vendor_module == "kvm_intel":
        return "vmx"
    v = raw.vendor
    if v in ("AuthenticAMD", "HygonGenuine"):
        return "svm"
    if v in ("GenuineIntel", "CentaurHauls", "  Shanghai  "):
        return "vmx"
    return None


class Evaluator:
    def __init__(self, policy: Policy, raw: CpuidTable, kcaps: KernelCaps, params: Mapping[str, str],
                 vendor: str | None, out_of_range: str = "zero"):
        self.p = policy
        self.out_of_range = out_of_range
        self.raw = raw
        self.k = kcaps
        self.params = dict(params)
        self.vendor = vendor
        self.caps: dict[str, int] = {}
        self.trace: dict[tuple[str, int], list[TraceStep]] = {}
        self.vars: dict[str, tuple[bool, str]] = {}
        self.notes: list[str] = []
        self._kernel_words = self._kernel_word_values()
        self._stack: list[str] = []

    # -- inputs ---------------------------------------------------------------
    def _kernel_word_values(self) -> dict[str, int]:
        """boot_cpu_data.x86_capability per kernel word.

        Named bits come from the kernel caps; hardware words also carry the
        raw CPUID bits the kernel has no name for (get_cpu_cap() copies whole
        registers), which /proc/cpuinfo cannot show.
        """
        out: dict[str, int] = {}
        named: dict[str, int] = {}
        for f in self.p.features.values():
            if f.kernel:
                named[f.word] = named.get(f.word, 0) | (1 << f.bit)
        for name in self.k.features:
            f = self.p.features.get(name)
            if f is None or not f.kernel:
                continue
            out[f.word] = out.get(f.word, 0) | (1 << f.bit)
        for w in self.p.words.values():
            if w.kernel and w.leaf is not None:
                # get_cpu_cap() reads a leaf only within the max leaf of its range
                out[w.name] = out.get(w.name, 0) | (self.raw_word(w.name, checked=True) & ~named.get(w.name, 0))
        return out

    def raw_word(self, word: str, *, checked: bool | None = None) -> int:
        """Raw CPUID of a word as KVM reads it.

        6.14+ ``raw_cpuid_get()`` returns 0 beyond the range's max leaf; the
        older ``__kvm_cpu_cap_mask()`` executes CPUID unchecked, so an
        out-of-range leaf yields what the CPU returns there (see
        :func:`out_of_range_read`).
        """
        w = self.p.words[word]
        if w.leaf is None or w.reg is None:
            return 0
        base = w.leaf & 0xFFFF0000
        if w.leaf > self.raw.value(base, 0, "eax"):
            if checked is None:
                checked = self.p.era == "cap_init"
            if checked:
                return 0
            return out_of_range_read(self.raw, w.leaf, w.subleaf, w.reg, self.out_of_range)
        return self.raw.value(w.leaf, w.subleaf, w.reg)

    def raw_has(self, feature: str) -> bool:
        loc = self.p.location(feature) if feature in self.p.features else None
        if loc is None:
            return False
        return bool(raw_bit(self.raw, *loc))

    def _spec(self, name: str) -> Variable | None:
        """The variable ``name``: overlay entry merged with the imported module parameter."""
        ov = self.p.variables.get(name)
        if ov is not None and ov.value is not None:
            return ov
        imp = None
        for group in ((self.vendor,) if self.vendor in ("svm", "vmx") else ()) + ("kvm",):
            imp = self.p.module_params.get(group, {}).get(name)
            if imp:
                break
        if ov is None and imp is None:
            return None
        if imp is None and (ov is None or ov.module is None):
            return None
        assert ov is not None or imp is not None
        return Variable(
            name=name,
            module=(ov.module if ov and ov.module else None) or (imp or {}).get("module"),
            param=(ov.param if ov and ov.param else None) or (imp or {}).get("param"),
            default=ov.default if ov and ov.default is not None else (imp or {}).get("default"),
            requires=ov.requires if ov else None, value=None,
            src="; ".join(x for x in ((imp or {}).get("src"), ov.src if ov else None) if x),
            note=ov.note if ov else None,
        )

    def variable(self, name: str) -> bool:
        if name in self.vars:
            return self.vars[name][0]
        if name in ("vendor_svm", "vendor_vmx"):
            val = self.vendor == name.removeprefix("vendor_")
            self.vars[name] = (val, f"vendor module is {self.vendor or 'unknown'}")
            return val
        v = self._spec(name)
        if v is None:
            self.vars[name] = (False, f"{name}: not a variable of the {self.vendor or 'unknown'} vendor module "
                                      f"in {self.p.label}, taken as false")
            return False
        self.vars[name] = (False, "(being evaluated)")
        if v.value is not None:
            val = self.cond(v.value)
            why = f"{name} = {v.value} -> {int(val)} [{v.src}]"
        else:
            key = f"{v.module}.{v.param}"
            given = self.params.get(key)
            raw_val = given if given is not None else (v.default or "0")
            val = param_true(raw_val)
            why = f"{key}={raw_val}" + ("" if given is not None else " (default)")
            if val and v.requires and given is None:
                req = self.cond(v.requires)
                if not req:
                    why += f", forced off by hardware setup: {v.requires} is false"
                val = val and req
            why += f" -> {name}={int(val)} [{v.src}]"
        self.vars[name] = (val, why)
        return val

    def atom(self, a: cond.Atom) -> bool:
        if a.kind == "has":
            return self.k.has(a.arg)
        if a.kind == "bug":
            return self.k.has_bug(a.arg)
        if a.kind == "cap":
            f = self.p.features.get(a.arg)
            return bool(f and self.caps.get(f.cap_word, 0) >> f.cap_bit & 1)
        if a.kind == "raw":
            return self.raw_has(a.arg)
        if a.kind == "var":
            return self.variable(a.arg)
        if a.kind == "config":
            return a.arg in CONFIG_ON
        if a.kind == "c":
            e = self.p.expressions.get(a.arg)
            if e is None:
                note = f"C condition {a.arg!r} is not modelled (add it to the overlay's expressions); taken as false"
                if note not in self.notes:
                    self.notes.append(note)
                return False
            return self.cond(e["means"])
        return False

    def cond(self, text: str | None) -> bool:
        return cond.evaluate(cond.parse(text), self.atom)

    def describe(self, text: str | None) -> str:
        if not text:
            return "unconditional"
        node = cond.parse(text)
        parts = []
        for a in cond.atoms(node):
            if a.kind in ("true", "false"):
                continue
            v = self.atom(a)
            extra = ""
            if a.kind == "var":
                extra = f" ({self.vars[a.arg][1]})"
            elif a.kind == "c" and a.arg in self.p.expressions:
                extra = f" (means {self.p.expressions[a.arg]['means']})"
            elif a.kind == "has" and self.k.why(a.arg):
                extra = f" ({self.k.why(a.arg)})"
            parts.append(f"{a}={int(v)}{extra}")
        return f"if {text} -> {int(cond.evaluate(node, self.atom))} [" + "; ".join(parts) + "]"

    # -- steps ----------------------------------------------------------------
    def _bit(self, feature: str) -> tuple[str, int] | None:
        f = self.p.features.get(feature)
        if f is None:
            self.notes.append(f"feature {feature} is not defined in {self.p.label}")
            return None
        return f.cap_word, f.cap_bit

    def _record(self, word: str, bit: int, layer: str, text: str, src: str) -> None:
        val = self.caps.get(word, 0) >> bit & 1
        self.trace.setdefault((word, bit), []).append(TraceStep(layer, text, f"{src} (linux {self.p.version})", val))

    def run(self) -> None:
        if self.p.era == "cap_mask":
            for w in self.p.words.values():
                if w.kernel:
                    self.caps[w.name] = self._kernel_words.get(w.name, 0)
        if self.vendor and self.vendor in self.p.vendors:
            self._steps(self.p.vendors[self.vendor], f"vendor module ({self.vendor})")
        else:
            self.notes.append(f"no vendor module modelled for {self.vendor!r}: common rules only")
            self._steps(self.p.common, "common")

    def _steps(self, steps: list[Step], layer: str) -> None:
        for s in steps:
            if s.op == "call":
                fn = s.function or ""
                if fn == self.p.common_function:
                    self._steps(self.p.common, "common")
                elif fn in self.p.vendors and fn not in self._stack:
                    self._stack.append(fn)
                    self._steps(self.p.vendors[fn], f"vendor module ({fn})")
                    self._stack.pop()
                continue
            if s.op in ("init", "mask", "init_kvm_defined"):
                self._init(s)
                continue
            self._fixup(s, "fix-up" if layer == "common" else layer)

    def _fixup(self, s: Step, layer: str) -> None:
        assert s.feature is not None
        loc = self._bit(s.feature)
        if loc is None:
            return
        word, bit = loc
        ok = self.cond(s.cond) if s.cond else True
        desc = self.describe(s.cond)
        verb = {"set": "kvm_cpu_cap_set", "clear": "kvm_cpu_cap_clear",
                "check_and_set": "kvm_cpu_cap_check_and_set"}[s.op]
        if ok and s.op == "check_and_set":
            ok = self.k.has(s.feature)
            desc += f"; kernel has {s.feature}: {int(ok)}"
        mask = 1 << bit
        if ok:
            if s.op == "clear":
                self.caps[word] = self.caps.get(word, 0) & ~mask
            else:
                self.caps[word] = self.caps.get(word, 0) | mask
        effect = "applied" if ok else "not applied"
        self._record(word, bit, layer, f"{verb}({s.feature}) {desc}: {effect}", s.src)

    def _init(self, s: Step) -> None:
        assert s.word is not None
        word = s.word
        w = self.p.words.get(word)
        if w is None:
            self.notes.append(f"word {word} unknown in {self.p.label}")
            return
        raw = self.raw_word(word)
        kern = self._kernel_words.get(word, 0)
        feats = passthrough = synth = emulated = mask = 0
        per_bit: list[tuple[int, str, str]] = []
        for macro, name in s.features:
            f = self.p.features.get(name)
            if f is None:
                self.notes.append(f"{macro}({name}) in {word}: feature unknown in {self.p.label}")
                continue
            bit = 1 << f.cap_bit
            if macro == "ALIASED_1_EDX_F":
                bit = 1 << f.bit
            why = ""
            if macro in ("F", "X86_64_F", "ALIASED_1_EDX_F"):
                feats |= bit
                mask |= bit
            elif macro in ("SCATTERED_F", "SF"):
                if self.k.has(name):
                    feats |= bit
                    mask |= bit
                why = f"kernel has {name}: {int(self.k.has(name))}"
            elif macro == "EMULATED_F":
                emulated |= bit
                feats |= bit
                why = "emulated: always set"
            elif macro == "PASSTHROUGH_F":
                passthrough |= bit
                feats |= bit
                why = "passthrough: ignores kernel caps, needs raw"
            elif macro == "SYNTHESIZED_F":
                synth |= bit
                if self.p.synthesized == "prefix":
                    feats |= bit
                    why = "pre-fix SYNTHESIZED_F: features |= bit unconditionally, synthesized |= bit"
                else:
                    if self.k.has(name):
                        feats |= bit
                    why = f"SYNTHESIZED_F: synthesized |= bit; features only if kernel has {name}: {int(self.k.has(name))}"
            elif macro in ("VENDOR_F", "RUNTIME_F"):
                why = "sets nothing here (vendor module / runtime)"
            per_bit.append((bit.bit_length() - 1, f"{macro}({name})", why))
        old = self.caps.get(word, 0)
        if s.op == "init":
            caps = feats
            steps = [f"features=0x{feats:08x}"]
            if w.kernel:
                caps &= kern
                steps.append(f"&= kernel caps 0x{kern:08x}")
            caps |= passthrough
            caps &= raw | synth
            caps |= emulated
            steps.append(f"|= passthrough 0x{passthrough:08x}; &= raw 0x{raw:08x} | synthesized 0x{synth:08x}; "
                         f"|= emulated 0x{emulated:08x}")
        elif s.op == "mask":
            caps = old & mask & raw
            steps = [f"kernel caps 0x{old:08x} &= mask 0x{mask:08x} &= raw 0x{raw:08x}"]
        else:
            caps = mask & raw
            steps = [f"mask 0x{mask:08x} &= raw 0x{raw:08x}"]
        self.caps[word] = caps
        fn = {"init": "kvm_cpu_cap_init", "mask": "kvm_cpu_cap_mask",
              "init_kvm_defined": "kvm_cpu_cap_init_kvm_defined"}[s.op]
        if s.op == "mask":
            named = {b for b, _, _ in per_bit}
            for bit in range(32):
                if old >> bit & 1 and bit not in named:
                    self._record(word, bit, "macro", f"{fn}({word}, ...): bit {bit} is not in the mask -> cleared "
                                 f"(kernel caps had it)", s.src)
        for bit, what, why in per_bit:
            parts = [f"{fn}({word}, {what})"]
            if why:
                parts.append(why)
            parts.append(f"raw bit {raw >> bit & 1}")
            if w.leaf is not None and w.leaf > self.raw.value(w.leaf & 0xFFFF0000, 0, "eax") and s.op != "init":
                parts.append(f"(0x{w.leaf:x} is above the host's max leaf; __kvm_cpu_cap_mask() runs CPUID unchecked: "
                             f"{'the highest basic leaf answers' if self.out_of_range == 'intel' else 'zeros'})")
            if s.op == "init" and w.kernel or s.op == "mask":
                parts.append(f"kernel bit {kern >> bit & 1}")
            parts.append(f"word: {' '.join(steps)} -> bit {caps >> bit & 1}")
            self._record(word, bit, "macro", "; ".join(parts), s.src)


def evaluate_caps(policy: Policy, raw: CpuidTable, kcaps: KernelCaps, params: Mapping[str, str],
                  vendor: str | None, out_of_range: str = "zero") -> CapsResult:
    ev = Evaluator(policy, raw, kcaps, params, vendor, out_of_range)
    ev.run()
    # make sure commonly used variables are explained even if no rule touched them
    for name in policy.variables:
        ev.variable(name)
    return CapsResult(ev.caps, ev.trace, ev.vars, vendor, ev.notes)
