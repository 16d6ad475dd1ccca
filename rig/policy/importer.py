"""``rig policy import KERNEL_SRC_DIR``: a policy file from a kernel source tree.

Reads (facts, not code, of the tree):

* ``arch/x86/include/asm/cpufeature.h`` -- ``enum cpuid_leafs`` (kernel words);
* ``arch/x86/kvm/reverse_cpuid.h`` (+ ``asm/kvm_host.h`` in newer trees) --
  KVM-only words, KVM-only features, ``reverse_cpuid[]`` (word -> leaf, subleaf,
  register) and ``__feature_translate()``;
* ``arch/x86/include/asm/cpufeatures.h`` -- features, bugs, /proc/cpuinfo names;
* ``arch/x86/kernel/cpu/scattered.c`` -- where scattered features live in CPUID;
* ``arch/x86/kvm/cpuid.c`` -- the macro era, the common caps function as steps,
  the per-leaf parameters of ``__do_cpuid_func()`` (see :mod:`.importer_leaves`);
* ``arch/x86/kvm/svm/{svm,sev}.c``, ``vmx/vmx.c``, ``x86.c`` -- the vendor caps
  functions as steps.

The output is deterministic (same tree -> byte-identical file); rules the
importer cannot translate appear as ``c("...")`` conditions, given meaning by
the hand-written overlay.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import cond
from .importer_c import (
    CFunction,
    CStmt,
    call,
    comments_of,
    find_function,
    preprocess,
    split_top,
    statements,
    strip_comments,
)
from .importer_leaves import leaf_parameters
from .model import Bug, Feature, Policy, PolicyError, Scattered, Step, Word
from .source import makefile_version

REGS = {"CPUID_EAX": "eax", "CPUID_EBX": "ebx", "CPUID_ECX": "ecx", "CPUID_EDX": "edx"}

#: functions whose bodies are KVM capability steps (vendor entry points first)
VENDOR_ENTRY = {"svm": ("arch/x86/kvm/svm/svm.c", "svm_set_cpu_caps"),
                "vmx": ("arch/x86/kvm/vmx/vmx.c", "vmx_set_cpu_caps")}
HELPERS = (("arch/x86/kvm/svm/sev.c", "sev_set_cpu_caps"), ("arch/x86/kvm/x86.c", "kvm_setup_xss_caps"))
COMMON = ("kvm_initialize_cpu_caps", "kvm_set_cpu_caps")
CAP_MACROS = ("F", "SCATTERED_F", "X86_64_F", "EMULATED_F", "SYNTHESIZED_F", "PASSTHROUGH_F", "ALIASED_1_EDX_F",
              "VENDOR_F", "RUNTIME_F")


class PolicyImportError(PolicyError):
    pass


class _Tree:
    def __init__(self, root: Path):
        self.root = root
        if not (root / "arch/x86/kvm/cpuid.c").is_file():
            raise PolicyImportError(f"{root}: not a kernel source tree (no arch/x86/kvm/cpuid.c)",
                               hint="pass the top directory of a Linux tree, e.g. from `rig policy fetch 6.12`")

    def text(self, rel: str, required: bool = True) -> str:
        p = self.root / rel
        try:
            return p.read_text(errors="replace")
        except OSError:
            if required:
                raise PolicyImportError(f"{self.root}: missing {rel}", hint="the importer needs the full arch/x86 tree") from None
            return ""


def _int(text: str) -> int:
    text = text.strip().rstrip("uUlL")
    return int(text, 0)


# -- words ----------------------------------------------------------------------------------------
def parse_kernel_words(text: str) -> list[str]:
    m = re.search(r"enum\s+cpuid_leafs\s*\{(.*?)\}", strip_comments(text), re.S)
    if not m:
        raise PolicyImportError("cpufeature.h: no enum cpuid_leafs")
    names = [x.split("=")[0].strip() for x in m.group(1).split(",")]
    return [n for n in names if n and n != "NR_CPUID_WORDS"]


def parse_kvm_words(text: str) -> list[str]:
    m = re.search(r"enum\s+kvm_only_cpuid_leafs\s*\{(.*?)\}", strip_comments(text), re.S)
    if not m:
        return []
    out = []
    for x in m.group(1).split(","):
        n = x.split("=")[0].strip()
        if n in ("", "NR_KVM_CPU_CAPS") or n.startswith("NKVMCAPINTS"):
            continue
        out.append(n)
    return out


def parse_reverse_cpuid(text: str) -> dict[str, tuple[int, int, str]]:
    out = {}
    for m in re.finditer(r"\[(CPUID_\w+)\]\s*=\s*\{\s*(\w+)\s*,\s*(\w+)\s*,\s*(CPUID_E[ABCD]X)\s*\}", text):
        out[m.group(1)] = (_int(m.group(2)), _int(m.group(3)), REGS[m.group(4)])
    return out


# -- features -------------------------------------------------------------------------------------
_FEAT = re.compile(r"^#define\s+X86_FEATURE_(\w+)\s+\(\s*(\d+)\s*\*\s*32\s*\+\s*(\d+)\s*\)\s*(/\*.*?\*/)?", re.M)
_BUG = re.compile(r"^#define\s+X86_BUG_(\w+)\s+X86_BUG\(\s*(?:(\d+)\s*\*\s*32\s*\+\s*)?(\d+)\s*\)\s*(/\*.*?\*/)?", re.M)


def cpuinfo_rule(cpufeatures: str) -> str:
    return "unless-empty-quotes" if re.search(r'If the string is\s+""', cpufeatures) else "quoted-only"


def _cpuinfo_name(name: str, comment: str | None, rule: str) -> str | None:
    c = (comment or "").removeprefix("/*").removesuffix("*/").strip()
    m = re.match(r'^"([^"]*)"', c)
    if rule == "quoted-only":
        return m.group(1) if m and m.group(1) else None
    if m:
        return m.group(1) or None
    return name.lower()


def parse_cpufeatures(text: str, words: list[str]) -> tuple[int, dict[str, Feature], dict[str, Bug], str]:
    m = re.search(r"#define\s+NCAPINTS\s+(\d+)", text)
    if not m:
        raise PolicyImportError("cpufeatures.h: no NCAPINTS")
    ncap = int(m.group(1))
    rule = cpuinfo_rule(text)
    feats: dict[str, Feature] = {}
    for fm in _FEAT.finditer(text):
        name, w, b = fm.group(1), int(fm.group(2)), int(fm.group(3))
        if w >= len(words):
            raise PolicyImportError(f"cpufeatures.h: X86_FEATURE_{name} in word {w}, beyond enum cpuid_leafs")
        feats[name] = Feature(name, words[w], b, _cpuinfo_name(name, fm.group(4), rule))
    bugs: dict[str, Bug] = {}
    for bm in _BUG.finditer(text):
        bit = int(bm.group(2) or 0) * 32 + int(bm.group(3))
        bugs[bm.group(1)] = Bug(bm.group(1), bit, _cpuinfo_name(bm.group(1), bm.group(4), rule))
    return ncap, feats, bugs, rule


_KVMF = re.compile(r"^#define\s+(KVM_)?X86_FEATURE_(\w+)\s+KVM_X86_FEATURE\(\s*(\w+)\s*,\s*(\d+)\s*\)", re.M)
_KVMF_NUM = re.compile(r"^#define\s+KVM_X86_FEATURE_(\w+)\s+\(\s*(\d+)\s*\*\s*32\s*\+\s*(\d+)\s*\)", re.M)


def apply_kvm_features(text: str, words: dict[str, Word], feats: dict[str, Feature], all_words: list[str]) -> None:
    """KVM-only features and translations of scattered kernel features (reverse_cpuid.h)."""
    translated = set(re.findall(r"KVM_X86_TRANSLATE_FEATURE\((\w+)\)", text))
    for m in _KVMF.finditer(text):
        is_trans, name, word, bit = bool(m.group(1)), m.group(2), m.group(3), int(m.group(4))
        if word not in words:
            raise PolicyImportError(f"reverse_cpuid.h: {name} in unknown word {word}")
        if is_trans:
            base = feats.get(name)
            if base is None:
                continue
            if translated and name not in translated:
                continue
            feats[name] = Feature(name, base.word, base.bit, base.cpuinfo, word, bit)
        else:
            feats[name] = Feature(name, word, bit, None, kernel=False)
    for m in _KVMF_NUM.finditer(text):
        name, w, bit = m.group(1), int(m.group(2)), int(m.group(3))
        base = feats.get(name)
        if base is not None and w < len(all_words):
            feats[name] = Feature(name, base.word, base.bit, base.cpuinfo, all_words[w], bit)


def parse_scattered(text: str) -> list[Scattered]:
    out = []
    body = strip_comments(text)
    for m in re.finditer(r"\{\s*X86_FEATURE_(\w+)\s*,\s*(CPUID_E[ABCD]X)\s*,\s*(\d+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\}", body):
        out.append(Scattered(m.group(1), _int(m.group(4)), _int(m.group(5)), REGS[m.group(2)], int(m.group(3))))
    return out


# -- steps ----------------------------------------------------------------------------------------
class _StepReader:
    def __init__(self, policy_words: dict[str, Word], feats: dict[str, Feature], rel: str,
                 fn: CFunction, known_functions: set[str]):
        self.words = policy_words
        self.feats = feats
        self.rel = rel
        self.fn = fn
        self.known = known_functions
        self.aliases: dict[str, tuple[str, str]] = {}
        self.comments = comments_of(fn.raw_body)

    def src(self, line: int) -> str:
        return f"{self.rel}:{line}"

    def feature_at(self, word: str, bit: int) -> str:
        for f in self.feats.values():
            if f.cap_word == word and f.cap_bit == bit:
                return f.name
        name = f"{word}_BIT{bit}"
        self.feats[name] = Feature(name, word, bit, None, kernel=self.words[word].kernel)
        return name

    def feature(self, text: str, where: str) -> str:
        t = text.strip()
        m = re.fullmatch(r"(?:KVM_)?X86_FEATURE_(\w+)", t)
        if not m or m.group(1) not in self.feats:
            raise PolicyImportError(f"{where}: unknown feature {t!r}")
        return m.group(1)

    def cond_text(self, conds: tuple[str, ...]) -> str | None:
        if not conds:
            return None
        node = cond.parse_c(" && ".join(f"({c})" for c in conds))
        return str(node)

    def mask_terms(self, word: str, expr: str, where: str) -> list[tuple[str, str]]:
        out = []
        for term in split_top(expr, "|"):
            t = term.strip()
            while t.startswith("(") and t.endswith(")") and "?" not in t:
                t = t[1:-1].strip()
            if t in ("", "0"):
                continue
            m = re.fullmatch(r"(F|SF|feature_bit)\((\w+)\)", t)
            if m:
                name = m.group(2)
                if name not in self.feats:
                    raise PolicyImportError(f"{where}: unknown feature {name!r} in mask")
                out.append(("SF" if m.group(1) == "SF" else "F", name))
                continue
            m = re.fullmatch(r"__feature_bit\((?:KVM_)?X86_FEATURE_(\w+)\)", t)
            if m:
                out.append(("F", m.group(1)))
                continue
            m = re.fullmatch(r"BIT\((\d+)\)", t)
            if m:
                out.append(("F", self.feature_at(word, int(m.group(1)))))
                continue
            m = re.fullmatch(r"IS_ENABLED\(CONFIG_X86_64\)\s*\?\s*F\((\w+)\)\s*:\s*0", t)
            if m:
                out.append(("X86_64_F", m.group(1)))
                continue
            if t in self.aliases:
                out.append(self.aliases[t])
                continue
            raise PolicyImportError(f"{where}: cannot read mask term {t!r}")
        return out

    def read(self) -> list[Step]:
        steps: list[Step] = []
        for st in statements(self.fn):
            s = self._one(st)
            if s is not None:
                steps.append(s)
        return steps

    def _one(self, st: CStmt) -> Step | None:
        where = self.src(st.line)
        text = st.text
        m = re.fullmatch(r"(?:unsigned int|u32)\s+(\w+)\s*=\s*F\((\w+)\)", text)
        if m:
            self.aliases[m.group(1)] = ("X86_64_F", m.group(2))
            return None
        # before 5.17: f_nx = is_efer_nx() ? F(NX) : 0 -- a 64-bit kernel sets EFER.NX whenever the CPU has NX
        m = re.fullmatch(r"(?:unsigned int|u32)\s+(\w+)\s*=\s*is_efer_nx\(\)\s*\?\s*F\((\w+)\)\s*:\s*0", text)
        if m:
            self.aliases[m.group(1)] = ("F", m.group(2))
            return None
        c = call(text)
        cnd = self.cond_text(st.conds)
        if c is not None:
            name, args = c
            if name in ("kvm_cpu_cap_init", "kvm_cpu_cap_mask", "kvm_cpu_cap_init_kvm_defined"):
                word = args[0]
                if word not in self.words:
                    raise PolicyImportError(f"{where}: unknown word {word}")
                op = {"kvm_cpu_cap_init": "init", "kvm_cpu_cap_mask": "mask",
                      "kvm_cpu_cap_init_kvm_defined": "init_kvm_defined"}[name]
                feats: list[tuple[str, str]] = []
                if op == "init":
                    for a in args[1:]:
                        fm = re.fullmatch(r"(\w+)\((\w+)\)", a.strip())
                        if not fm or fm.group(1) not in CAP_MACROS:
                            raise PolicyImportError(f"{where}: cannot read initializer {a!r}")
                        if fm.group(2) not in self.feats:
                            raise PolicyImportError(f"{where}: unknown feature {fm.group(2)!r}")
                        feats.append((fm.group(1), fm.group(2)))
                else:
                    feats = self.mask_terms(word, ",".join(args[1:]), where)
                if cnd is not None:
                    raise PolicyImportError(f"{where}: conditional {name} is not supported")
                return Step(op=op, src=where, word=word, features=tuple(feats))
            if name in ("kvm_cpu_cap_set", "kvm_cpu_cap_clear", "kvm_cpu_cap_check_and_set"):
                op = {"kvm_cpu_cap_set": "set", "kvm_cpu_cap_clear": "clear",
                      "kvm_cpu_cap_check_and_set": "check_and_set"}[name]
                return Step(op=op, src=where, feature=self.feature(args[0], where), cond=cnd)
            if name in self.known:
                return Step(op="call", src=where, function=name, cond=cnd)
            return None
        m = re.fullmatch(r"kvm_cpu_caps\[(\w+)\]\s*(\|=|&=)\s*(~?)\s*BIT\((\d+)\)", text)
        if m:
            word = m.group(1)
            feat = self.feature_at(word, int(m.group(4)))
            op = "set" if m.group(2) == "|=" else "clear"
            return Step(op=op, src=where, feature=feat, cond=cnd)
        if re.search(r"\bkvm_cpu_caps\b", text) and not re.match(r"(memset|memcpy|BUILD_BUG_ON)\b", text):
            raise PolicyImportError(f"{where}: cannot read statement {text!r}")
        return None


# -- module parameters ----------------------------------------------------------------------------
PARAM_FILES = (("svm", "kvm_amd", "arch/x86/kvm/svm/svm.c"), ("svm", "kvm_amd", "arch/x86/kvm/svm/sev.c"),
               ("vmx", "kvm_intel", "arch/x86/kvm/vmx/vmx.c"), ("kvm", "kvm", "arch/x86/kvm/x86.c"),
               ("kvm", "kvm", "arch/x86/kvm/pmu.c"), ("kvm", "kvm", "arch/x86/kvm/mmu/mmu.c"))


def parse_module_params(tree: _Tree) -> dict[str, dict[str, dict[str, str]]]:
    """C variable -> module parameter (name, default, where), per module group."""
    out: dict[str, dict[str, dict[str, str]]] = {"kvm": {}, "svm": {}, "vmx": {}}
    for group, module, rel in PARAM_FILES:
        raw = tree.text(rel, required=False)
        if not raw:
            continue
        text = preprocess(strip_comments(raw))
        for m in re.finditer(r"\bmodule_param(?:_named)?\(\s*(\w+)\s*,\s*(\w+)\s*(?:,\s*(\w+)\s*)?,\s*[\w|]+\s*\)", text):
            named = m.group(0).startswith("module_param_named")
            param, var = (m.group(1), m.group(2)) if named else (m.group(1), m.group(1))
            if named and m.group(3) is None:
                continue
            d = re.search(rf"(?m)^\s*(?:static\s+)?(?:const\s+)?(?:bool|int|unsigned int|u8|u16|u32|ushort)\s+"
                          rf"(?:__\w+\s+)*{re.escape(var)}\s*(?:__\w+\s*)*=\s*([^;]+);", text)
            default = " ".join(d.group(1).split()) if d else "0"
            line = text.count("\n", 0, m.start()) + 1
            out[group].setdefault(var, {"module": module, "param": param, "default": default, "src": f"{rel}:{line}"})
        # before 5.11 (svm.c): "static int npt = true; module_param(npt, ...)" and in hardware setup
        # "if (npt_enabled && !npt) npt_enabled = false;" -- the variable the caps read follows that parameter
        for m in re.finditer(r"\bif\s*\(\s*(?:(\w+)\s*&&\s*)?!\s*(\w+)\s*\)\s*(\w+)\s*=\s*false\s*;", text):
            guard, param_var, var = m.groups()
            if (guard in (None, var)) and param_var in out[group] and var not in out[group] and param_var != var:
                line = text.count("\n", 0, m.start()) + 1
                out[group][var] = {**out[group][param_var], "src": f"{out[group][param_var]['src']} ({rel}:{line}: "
                                                                  f"{var} = false when !{param_var})"}
    return {g: dict(sorted(v.items())) for g, v in out.items()}


# -- top level ------------------------------------------------------------------------------------
def _macro_semantics(cpuid_c: str) -> tuple[str, str | None]:
    clean = strip_comments(cpuid_c)
    era = "cap_init" if re.search(r"#define\s+kvm_cpu_cap_init\(\s*\w+\s*,\s*\w+\.\.\.\)", clean) else "cap_mask"
    m = re.search(r"#define\s+SYNTHESIZED_F\(name\)(.*?)\n\s*\n", clean, re.S)
    if not m:
        return era, None
    return era, "fixed" if "boot_cpu_has" in m.group(1) else "prefix"


def import_tree(root: str | Path, *, source: dict[str, Any] | None = None) -> Policy:
    tree = _Tree(Path(root))
    version = makefile_version(tree.root)
    if version is None:
        raise PolicyImportError(f"{tree.root}: no VERSION/PATCHLEVEL/SUBLEVEL in Makefile")
    cpufeature_h = tree.text("arch/x86/include/asm/cpufeature.h")
    cpufeatures = tree.text("arch/x86/include/asm/cpufeatures.h")
    # reverse_cpuid[] moved from cpuid.h to reverse_cpuid.h in 5.14
    reverse = tree.text("arch/x86/kvm/reverse_cpuid.h", required=False) or tree.text("arch/x86/kvm/cpuid.h")
    kvm_host = tree.text("arch/x86/include/asm/kvm_host.h", required=False)
    cpuid_c = tree.text("arch/x86/kvm/cpuid.c")

    kwords = parse_kernel_words(cpufeature_h)
    ncap, feats, bugs, rule = parse_cpufeatures(cpufeatures, kwords)
    if ncap != len(kwords):
        raise PolicyImportError(f"NCAPINTS {ncap} != {len(kwords)} words in enum cpuid_leafs")
    kvm_only = parse_kvm_words(reverse) or parse_kvm_words(kvm_host)
    all_words = kwords + kvm_only
    rev = parse_reverse_cpuid(reverse)
    words: dict[str, Word] = {}
    for i, n in enumerate(all_words):
        loc = rev.get(n)
        words[n] = Word(n, i, i < ncap, loc[0] if loc else None, loc[1] if loc else 0, loc[2] if loc else None)
    apply_kvm_features(reverse, words, feats, all_words)
    scattered = parse_scattered(tree.text("arch/x86/kernel/cpu/scattered.c"))

    era, synth = _macro_semantics(cpuid_c)
    clean_cpuid = preprocess(strip_comments(cpuid_c))
    common_name = next((n for n in COMMON if find_function(cpuid_c, n, clean_cpuid)), None)
    if common_name is None:
        raise PolicyImportError(f"{tree.root}: cpuid.c defines neither of {', '.join(COMMON)}")
    known = {common_name, *(fn for _, fn in VENDOR_ENTRY.values()), *(fn for _, fn in HELPERS)}
    fn = find_function(cpuid_c, common_name, clean_cpuid)
    assert fn is not None
    common = _StepReader(words, feats, "arch/x86/kvm/cpuid.c", fn, known).read()
    vendors: dict[str, list[Step]] = {}
    for vendor, (rel, name) in VENDOR_ENTRY.items():
        text = tree.text(rel)
        f = find_function(text, name)
        if f is None:
            raise PolicyImportError(f"{rel}: no {name}()")
        vendors[vendor] = _StepReader(words, feats, rel, f, known).read()
    for rel, name in HELPERS:
        text = tree.text(rel, required=False)
        f = find_function(text, name) if text else None
        if f is not None:
            vendors[name] = _StepReader(words, feats, rel, f, known).read()
    leaves, kvm_features, kvm_cond = leaf_parameters(tree.root, cpuid_c, words)
    used = {"enable_pmu", "enable_ept"}  # also read by the per-leaf rules and tdp_enabled
    for st in common + [x for v in vendors.values() for x in v]:
        if st.cond:
            used |= {a.arg for a in cond.atoms(cond.parse(st.cond)) if a.kind == "var"}
    params = {g: {k: v for k, v in ps.items() if k in used} for g, ps in parse_module_params(tree).items()}
    src = {"kernel_version": version, "files": ["arch/x86/kvm/cpuid.c", "arch/x86/kvm/reverse_cpuid.h",
                                                "arch/x86/include/asm/cpufeatures.h", "arch/x86/kernel/cpu/scattered.c",
                                                "arch/x86/kvm/svm/svm.c", "arch/x86/kvm/svm/sev.c",
                                                "arch/x86/kvm/vmx/vmx.c", "arch/x86/kvm/x86.c"]}
    if source is None:
        meta = tree.root.parent / "source.json"
        if meta.is_file():
            d = json.loads(meta.read_text())
            source = {k: d[k] for k in ("package", "package_version", "suite", "kind", "orig", "orig_sha256",
                                        "debian_tar", "debian_tar_sha256", "debian_patches") if k in d}
    src.update(source or {})
    series = ".".join(version.split(".")[:2])
    return Policy(
        version=series, era=era, synthesized=synth, source=src, words=words, features=feats, bugs=bugs,
        scattered=scattered, common=common, common_function=common_name, vendors=vendors, leaves=leaves,
        kvm_features=kvm_features, kvm_features_conditional=kvm_cond, cpuinfo_rule=rule, module_params=params,
    )
