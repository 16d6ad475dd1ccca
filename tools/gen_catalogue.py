#!/usr/bin/env python3
"""Regenerate rig/cpuid/data/features.toml from the sources' facts.

The committed TOML is the data; this script is how it was derived, and it can
be rerun whenever a newer kernel or QEMU names more bits.  It reads facts only
(bit positions, names, words) from:

* a Linux source tree (newest available; Debian ``linux-source-X``):
  ``arch/x86/include/asm/cpufeatures.h`` (X86_FEATURE names, words, the quoted
  /proc/cpuinfo names), ``arch/x86/include/asm/cpufeature.h`` (``enum
  cpuid_leafs``), ``arch/x86/include/asm/kvm_host.h`` (``enum
  kvm_only_cpuid_leafs``), ``arch/x86/kvm/reverse_cpuid.h`` (word -> leaf and
  KVM-only bits), ``arch/x86/kernel/cpu/scattered.c`` (scattered bits),
  ``arch/x86/include/uapi/asm/kvm_para.h`` and
  ``Documentation/virt/kvm/x86/cpuid.rst`` (KVM_FEATURE_*),
  ``tools/arch/x86/kcpuid/cpuid.csv`` (CC0: bit and bitfield names of the
  Intel/AMD manuals);
* one or more QEMU trees, oldest first (``target/i386/cpu.c``:
  ``feature_word_info[]`` names and the property aliases);
* ``tools/catalogue_extra.toml``: the scope (which words must be complete),
  which leaves' multi-bit fields to take from cpuid.csv, and the few facts the
  sources above do not state (hypervisor leaf fields, AVX10 version).

Usage::

    python3 tools/gen_catalogue.py --fetch DIR          # download + unpack sources into DIR
    python3 tools/gen_catalogue.py --linux DIR/linux-source-7.2 \\
        --qemu DIR/qemu-7.2.0 --qemu DIR/qemu-10.0.2 -o rig/cpuid/data/features.toml

``--fetch`` uses apt with a private configuration whose mirror URI is read at
run time from /etc/apt/sources.list.d/debian.sources (suites: the machine's own,
bookworm-backports and sid, with deb-src lines).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REGS = ("eax", "ebx", "ecx", "edx")
Loc = tuple[int, int, str, int]  # leaf, subleaf, reg, bit
Word = tuple[int, int, str]


# ---------------------------------------------------------------------------
# kernel
# ---------------------------------------------------------------------------
def _strip_c_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def parse_enum(text: str, enum_name: str, start: int = 0) -> dict[str, int]:
    """Values of a C enum with plain or ``= NAME``/``= N`` initialisers."""
    m = re.search(r"enum\s+" + re.escape(enum_name) + r"\s*\{(.*?)\};", text, re.S)
    if not m:
        raise SystemExit(f"enum {enum_name} not found")
    out: dict[str, int] = {}
    val = start - 1
    for item in _strip_c_comments(m.group(1)).split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            name, expr = (s.strip() for s in item.split("=", 1))
            if re.fullmatch(r"\d+", expr):
                val = int(expr)
            elif expr in out:
                val = out[expr]
            else:
                val = start  # e.g. CPUID_12_EAX = NCAPINTS: caller passes NCAPINTS as start
        else:
            name = item
            val += 1
        out[name] = val
    return out


@dataclass
class KernelDef:
    name: str          # X86_FEATURE_ suffix
    word: int          # kernel word number (cpufeatures.h)
    bit: int
    cpuinfo: str | None
    desc: str


def parse_cpufeatures(text: str) -> tuple[int, list[KernelDef]]:
    ncapints = int(re.search(r"#define\s+NCAPINTS\s+(\d+)", text).group(1))
    defs: list[KernelDef] = []
    lines = text.splitlines()
    i = 0
    pat = re.compile(r"#define\s+X86_FEATURE_(\w+)\s*\(\s*(\d+)\s*\*\s*32\s*\+\s*(\d+)\s*\)(.*)")
    while i < len(lines):
        m = pat.match(lines[i])
        i += 1
        if not m:
            continue
        rest = m.group(4)
        if "/*" in rest and "*/" not in rest:
            while i < len(lines) and "*/" not in rest:
                t = lines[i].strip()
                rest += " " + (t[1:].strip() if t.startswith("*") and not t.startswith("*/") else t)
                i += 1
        cm = re.search(r"/\*(.*?)\*/", rest, re.S)
        comment = " ".join(cm.group(1).split()) if cm else ""
        cpuinfo = None
        qm = re.match(r'"([^"]*)"\s*(.*)', comment)
        if qm:
            cpuinfo = qm.group(1) or None
            comment = qm.group(2)
        defs.append(KernelDef(m.group(1), int(m.group(2)), int(m.group(3)), cpuinfo, comment.strip()))
    return ncapints, defs


def parse_reverse_cpuid(text: str) -> tuple[dict[str, Word], dict[str, tuple[str, int]]]:
    """(word name -> (leaf, subleaf, reg), KVM-only feature defs name -> (word, bit)).

    The second map holds both ``KVM_X86_FEATURE_X`` (translated scattered
    features, key ``X``) and KVM-only ``X86_FEATURE_X`` definitions.
    """
    words: dict[str, Word] = {}
    for m in re.finditer(r"\[(CPUID_\w+)\]\s*=\s*\{\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*(\d+)\s*,\s*CPUID_(E[ABCD]X)\s*\}", text):
        words[m.group(1)] = (int(m.group(2), 0), int(m.group(3)), m.group(4).lower())
    kvm: dict[str, tuple[str, int]] = {}
    for m in re.finditer(r"#define\s+(?:KVM_)?X86_FEATURE_(\w+)\s+KVM_X86_FEATURE\(\s*(CPUID_\w+)\s*,\s*(\d+)\s*\)", text):
        kvm[m.group(1)] = (m.group(2), int(m.group(3)))
    return words, kvm


def parse_scattered(text: str) -> list[tuple[str, Loc]]:
    out = []
    for m in re.finditer(
        r"\{\s*X86_FEATURE_(\w+)\s*,\s*CPUID_(E[ABCD]X)\s*,\s*(\d+)\s*,\s*(0x[0-9a-fA-F]+)\s*,\s*(\d+)\s*\}", text
    ):
        out.append((m.group(1), (int(m.group(4), 16), int(m.group(5)), m.group(2).lower(), int(m.group(3)))))
    return out


def parse_kvm_para(header: str, rst: str) -> list[tuple[str, str, int, str]]:
    """KVM_FEATURE_* (EAX) and KVM_HINTS_* (EDX) of leaf 0x40000001: (macro, reg, bit, desc)."""
    descs: dict[str, str] = {}
    cur = None
    for line in rst.splitlines():
        m = re.match(r"(KVM_(?:FEATURE|HINTS)_\w+)\s+(\d+)\s+(.*)", line)
        if m:
            cur = m.group(1)
            descs[cur] = m.group(3).strip()
        elif cur and line.startswith(" ") and line.strip() and not line.strip().startswith("="):
            descs[cur] += " " + line.strip()
        else:
            cur = None
    out = []
    for m in re.finditer(r"#define\s+(KVM_(FEATURE|HINTS)_\w+)\s+(\d+)\b", header):
        reg = "eax" if m.group(2) == "FEATURE" else "edx"
        out.append((m.group(1), reg, int(m.group(3)), descs.get(m.group(1), "")))
    return out


def parse_kcpuid_csv(text: str) -> tuple[dict[Loc, tuple[str, str]], list[dict]]:
    """Single bits -> (short name, description); multi-bit fields as dicts."""
    bits: dict[Loc, tuple[str, str]] = {}
    fields: list[dict] = []
    rows = [r for r in csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))]
    for row in rows:
        if len(row) < 6:
            continue
        leaf_s, sub_s, reg, bits_s, name = (c.strip() for c in row[:5])
        desc = ",".join(row[5:]).strip()
        if ":" in sub_s:
            continue  # subleaf ranges: not single locations
        leaf, sub = int(leaf_s, 16), int(sub_s)
        if ":" in bits_s:
            hi, lo = (int(x) for x in bits_s.split(":"))
            fields.append(dict(name=name, leaf=leaf, subleaf=sub, reg=reg, lo=lo, hi=hi, desc=desc))
        else:
            bits[(leaf, sub, reg, int(bits_s))] = (name, desc)
    return bits, fields


# ---------------------------------------------------------------------------
# QEMU
# ---------------------------------------------------------------------------
def _balanced(text: str, start: int) -> tuple[str, int]:
    """Content of the brace block opening at text[start] == '{'."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    raise SystemExit("unbalanced braces in QEMU cpu.c")


def parse_qemu_cpu_c(text: str) -> tuple[dict[Word, dict[int, str]], dict[str, str]]:
    """(CPUID feature words -> {bit: name}, alias -> property)."""
    text = _strip_c_comments(text)
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"FeatureWordInfo\s+feature_word_info\s*\[\s*FEATURE_WORDS\s*\]\s*=\s*\{", text)
    body, _ = _balanced(text, m.end() - 1)
    words: dict[Word, dict[int, str]] = {}
    pos = 0
    for em in re.finditer(r"\[\s*FEAT_\w+\s*\]\s*=\s*\{", body):
        if em.start() < pos:
            continue
        entry, pos = _balanced(body, em.end() - 1)
        if not re.search(r"\.type\s*=\s*CPUID_FEATURE_WORD", entry):
            continue
        nm = re.search(r"\.feat_names\s*=\s*\{", entry)
        if nm is None:
            continue  # e.g. the XCR0 words: CPUID words without property names
        names_txt, _ = _balanced(entry, nm.end() - 1)
        cm = re.search(r"\.cpuid\s*=\s*\{", entry)
        cpuid_txt, _ = _balanced(entry, cm.end() - 1)
        eax_s = re.search(r"\.eax\s*=\s*(\w+)", cpuid_txt).group(1)
        leaf = 0x40000001 if eax_s == "KVM_CPUID_FEATURES" else int(eax_s, 0)
        ecx_m = re.search(r"\.ecx\s*=\s*(\w+)", cpuid_txt)
        sub = int(ecx_m.group(1), 0) if ecx_m else 0
        reg = re.search(r"\.reg\s*=\s*R_(E[ABCD]X)", cpuid_txt).group(1).lower()
        names: dict[int, str] = {}
        idx = 0
        for tok in re.finditer(r'\[\s*(\d+)\s*\]\s*=|"([^"]*)"|NULL', names_txt):
            if tok.group(1) is not None:
                idx = int(tok.group(1))
            elif tok.group(0) == "NULL":
                idx += 1
            else:
                names[idx] = tok.group(2)
                idx += 1
        words[(leaf, sub, reg)] = names
    aliases = dict(re.findall(r'object_property_add_alias\(\s*obj\s*,\s*"([^"]+)"\s*,\s*obj\s*,\s*"([^"]+)"\s*\)', text))
    return words, aliases


# ---------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------
@dataclass
class Entry:
    loc: Loc
    kernel: str | None = None
    word: str | None = None
    kvm_only: bool = False
    cpuinfo: str | None = None
    qemu: list[str] = field(default_factory=list)
    csv_name: str | None = None
    desc: str = ""
    note: str = ""
    name: str = ""


def build(linux: Path, qemu_trees: list[Path], extra_path: Path) -> tuple[list[Entry], list[dict], dict]:
    extra = tomllib.loads(extra_path.read_text())
    scope: set[Word] = {(int(w["leaf"]), int(w.get("subleaf", 0)), w["reg"]) for w in extra["scope"]}

    cf_text = (linux / "arch/x86/include/asm/cpufeatures.h").read_text()
    ncapints, kdefs = parse_cpufeatures(cf_text)
    kwords = parse_enum((linux / "arch/x86/include/asm/cpufeature.h").read_text(), "cpuid_leafs")
    kvm_words = parse_enum((linux / "arch/x86/include/asm/kvm_host.h").read_text(), "kvm_only_cpuid_leafs", ncapints)
    word_name = {v: k for k, v in kwords.items()}
    word_name.update({v: k for k, v in kvm_words.items() if k.startswith("CPUID_")})
    rev_words, kvm_defs = parse_reverse_cpuid((linux / "arch/x86/kvm/reverse_cpuid.h").read_text())
    scattered = parse_scattered((linux / "arch/x86/kernel/cpu/scattered.c").read_text())
    csv_bits, csv_fields = parse_kcpuid_csv((linux / "tools/arch/x86/kcpuid/cpuid.csv").read_text())
    kvm_para = parse_kvm_para(
        (linux / "arch/x86/include/uapi/asm/kvm_para.h").read_text(),
        (linux / "Documentation/virt/kvm/x86/cpuid.rst").read_text(),
    )
    kdef_by_name = {d.name: d for d in kdefs}

    entries: dict[Loc, Entry] = {}

    def entry(loc: Loc) -> Entry:
        if loc not in entries:
            entries[loc] = Entry(loc)
        return entries[loc]

    # 1. kernel hardware words: X86_FEATURE in a word that reverse_cpuid maps to a leaf
    for d in kdefs:
        wname = word_name.get(d.word)
        if wname is None or wname.startswith("CPUID_LNX") or wname not in rev_words:
            continue
        leaf, sub, reg = rev_words[wname]
        e = entry((leaf, sub, reg, d.bit))
        e.kernel, e.word, e.cpuinfo, e.desc = d.name, wname, d.cpuinfo, d.desc
    # 2. scattered bits: real location; word = KVM-only word if KVM defines one
    for name, loc in scattered:
        e = entry(loc)
        if e.kernel and e.kernel != name:
            raise SystemExit(f"scattered {name} collides with {e.kernel} at {loc}")
        d = kdef_by_name[name]
        e.kernel, e.cpuinfo, e.desc = name, d.cpuinfo, d.desc
        if name in kvm_defs and rev_words.get(kvm_defs[name][0], ())[:3] == loc[:3]:
            e.word, e.kvm_only = kvm_defs[name][0], True
            e.note = f"KVM-only word; scattered.c puts it in kernel word {word_name[d.word]}"
        else:
            e.word = word_name[d.word]
            e.note = f"scattered (scattered.c); kernel word {e.word}"
    # 3. KVM-only bits: translated kernel features (e.g. CONSTANT_TSC) and KVM-only X86_FEATURE defs
    for name, (wname, bit) in kvm_defs.items():
        leaf, sub, reg = rev_words[wname]
        e = entry((leaf, sub, reg, bit))
        if e.kernel and e.kernel != name:
            raise SystemExit(f"KVM-only {name} collides with {e.kernel}")
        e.kernel, e.word, e.kvm_only = name, wname, True
        d = kdef_by_name.get(name)
        if d is not None:
            e.cpuinfo = d.cpuinfo
            e.desc = e.desc or d.desc
            if not any(n == name for n, _ in scattered):
                e.note = f"kernel sets it from CPUID in code (kernel word {word_name[d.word]})"
    # 3b. Linux-defined-word features that vendor code sets from one CPUID bit
    for x in extra.get("kernel_code_bit", []):
        d = kdef_by_name[x["kernel"]]
        e = entry((int(x["leaf"]), int(x.get("subleaf", 0)), x["reg"], int(x["bit"])))
        e.kernel, e.word, e.cpuinfo, e.desc = d.name, word_name[d.word], d.cpuinfo, d.desc or e.desc
        e.note = f"kernel sets it from this bit in {x['where']} (kernel word {e.word})"
    # 4. KVM paravirtual features
    for macro, reg, bit, desc in kvm_para:
        e = entry((0x40000001, 0, reg, bit))
        e.kernel, e.word, e.desc = macro, "KVM_CPUID_FEATURES", desc
    # 5. QEMU names, oldest tree first; the newest canonical name goes first
    qemu_versions = []
    per_loc: dict[Loc, list[list[str]]] = {}

    def qver(tree: Path) -> str:
        return (tree / "VERSION").read_text().strip() if (tree / "VERSION").exists() else tree.name

    for tree in sorted(qemu_trees, key=lambda t: _debver_key(qver(t))):  # oldest first
        text = (tree / "target/i386/cpu.c").read_text(errors="replace")
        qwords, aliases = parse_qemu_cpu_c(text)
        qemu_versions.append(qver(tree))
        rev_alias: dict[str, list[str]] = {}
        for a, target in aliases.items():
            rev_alias.setdefault(target, []).append(a)
        for (leaf, sub, reg), names in qwords.items():
            for bit, n in names.items():
                per_loc.setdefault((leaf, sub, reg, bit), []).append([n, *sorted(rev_alias.get(n, []))])
    for loc, lists in per_loc.items():
        e = entry(loc)
        ordered = [*lists[-1], *(n for lst in reversed(lists[:-1]) for n in lst)]
        e.qemu = list(dict.fromkeys(ordered))
    # 6. manual bit names (cpuid.csv) for the scope words, and descriptions everywhere
    for loc, (cname, cdesc) in csv_bits.items():
        if loc in entries:
            entries[loc].csv_name = cname
            if not entries[loc].desc:
                entries[loc].desc = cdesc
        elif loc[:3] in scope:
            e = entry(loc)
            e.csv_name, e.desc = cname, cdesc
    # 7. extra facts
    for x in extra.get("feature", []):
        loc = (int(x["leaf"]), int(x.get("subleaf", 0)), x["reg"], int(x["bit"]))
        e = entry(loc)
        e.csv_name = e.csv_name or x["name"]
        e.desc = e.desc or x.get("desc", "")

    # canonical names: cpuinfo > QEMU canonical > kernel (lower) > manual name; unique
    taken: dict[str, Loc] = {}

    def order(e: Entry) -> tuple:
        leaf, sub, reg, bit = e.loc
        return (0 if e.loc[:3] in scope else 1, leaf, sub, REGS.index(reg), bit)

    result = sorted(entries.values(), key=order)
    for e in result:
        cands = [e.cpuinfo, e.qemu[0] if e.qemu else None, e.kernel.lower() if e.kernel else None, e.csv_name]
        for c in cands:
            if c and c not in taken:
                e.name = c
                break
        else:
            base = next(c for c in cands if c)
            leaf, sub, reg, _ = e.loc
            e.name = f"e_{base}" if leaf == 0x80000001 else f"{base}_{leaf:x}" + (f"_{sub}" if sub else "")
            if e.name in taken:
                raise SystemExit(f"cannot name {e.loc}: {cands}")
        taken[e.name] = e.loc

    # fields: cpuid.csv multi-bit rows of the configured leaves + extra
    want = {(int(w["leaf"]), int(w.get("subleaf", 0)), w["reg"]) for w in extra["field_words"]}
    fields = [f for f in csv_fields if (f["leaf"], f["subleaf"], f["reg"]) in want]
    fields += [dict(x, subleaf=int(x.get("subleaf", 0))) for x in extra.get("field", [])]
    fnames: set[str] = set()
    for f in fields:
        if f["name"] in fnames:
            f["name"] = f"e_{f['name']}" if f["leaf"] >= 0x80000000 else f"{f['name']}_{f['leaf']:x}"
        if f["name"] in fnames:
            raise SystemExit(f"duplicate field name {f['name']}")
        fnames.add(f["name"])
    meta = dict(linux_name=_linux_version(linux), qemu=qemu_versions)
    return result, fields, meta


def _linux_version(linux: Path) -> str:
    mk = linux / "Makefile"
    if not mk.exists():
        return linux.name
    v = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d+)", mk.read_text(), re.M))
    return f"{v.get('VERSION', '?')}.{v.get('PATCHLEVEL', '?')}.{v.get('SUBLEVEL', '?')}"


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------
def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fmt_leaf(leaf: int) -> str:
    return f"0x{leaf:x}" if leaf < 0x100 else f"0x{leaf:08x}"


def render(entries: list[Entry], fields: list[dict], meta: dict, scope: set[Word]) -> str:
    out = [
        "# The rig's CPUID feature catalogue.  GENERATED by tools/gen_catalogue.py from facts in:",
        f"#   Linux {meta['linux_name']} (cpufeatures.h, cpufeature.h, kvm_host.h, reverse_cpuid.h, scattered.c,",
        "#   uapi kvm_para.h, Documentation/virt/kvm/x86/cpuid.rst, tools/arch/x86/kcpuid/cpuid.csv (CC0)),",
        f"#   QEMU target/i386/cpu.c of {', '.join(meta['qemu'])} (feature_word_info[] names + aliases),",
        "#   tools/catalogue_extra.toml.",
        "# Schema: rig/cpuid/catalogue.py.  Edit the sources of this file, then rerun the generator.",
        "",
    ]
    cur: Word | None = None
    for e in sorted(entries, key=lambda e: (e.loc[0], e.loc[1], REGS.index(e.loc[2]), e.loc[3])):
        leaf, sub, reg, bit = e.loc
        if (leaf, sub, reg) != cur:
            cur = (leaf, sub, reg)
            words = sorted({x.word for x in entries if x.loc[:3] == cur and x.word and "_LNX_" not in x.word})
            tag = " (listed leaf)" if cur in scope else ""
            out.append(f"# ---- {_fmt_leaf(leaf)}.{sub} {reg.upper()}{tag}" + (f"; word {', '.join(words)}" if words else ""))
        out.append("[[feature]]")
        out.append(f"name = {_q(e.name)}")
        out.append(f"leaf = {_fmt_leaf(leaf)}")
        if sub:
            out.append(f"subleaf = {sub}")
        out.append(f"reg = {_q(reg)}")
        out.append(f"bit = {bit}")
        if e.kernel:
            out.append(f"kernel = {_q(e.kernel)}")
        if e.word:
            out.append(f"word = {_q(e.word)}" + (f"  # {e.note}" if e.note else ""))
        if e.kvm_only:
            out.append("kvm_only = true")
        if e.cpuinfo:
            out.append(f"cpuinfo = {_q(e.cpuinfo)}")
        if e.qemu:
            out.append(f"qemu = [{', '.join(_q(n) for n in e.qemu)}]")
        if e.desc:
            out.append(f"desc = {_q(e.desc)}")
        out.append("")
    out.append("# ---- multi-bit fields")
    for f in sorted(fields, key=lambda f: (f["leaf"], f["subleaf"], REGS.index(f["reg"]), f["lo"])):
        out.append("[[field]]")
        out.append(f"name = {_q(f['name'])}")
        out.append(f"leaf = {_fmt_leaf(f['leaf'])}")
        if f["subleaf"]:
            out.append(f"subleaf = {f['subleaf']}")
        out.append(f"reg = {_q(f['reg'])}")
        out.append(f"lo = {f['lo']}")
        out.append(f"hi = {f['hi']}")
        if f.get("desc"):
            out.append(f"desc = {_q(f['desc'])}")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# fetching the sources (Debian packages, private apt configuration)
# ---------------------------------------------------------------------------
LINUX_FILES = [
    "arch/x86/include/asm/cpufeatures.h", "arch/x86/include/asm/cpufeature.h",
    "arch/x86/include/asm/kvm_host.h", "arch/x86/kvm/reverse_cpuid.h", "arch/x86/kernel/cpu/scattered.c",
    "arch/x86/include/uapi/asm/kvm_para.h", "Documentation/virt/kvm/x86/cpuid.rst",
    "tools/arch/x86/kcpuid/cpuid.csv", "Makefile",
]
QEMU_FILES = ["target/i386/cpu.c", "VERSION"]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def fetch(dest: Path, qemu_versions: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    sources = Path("/etc/apt/sources.list.d/debian.sources").read_text()
    uri = re.search(r"^URIs:\s*(\S+)", sources, re.M).group(1)
    own = re.search(r"^Suites:\s*(\S+)", sources, re.M).group(1)
    apt = dest / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    lines = [f"{kind} {uri} {suite} main" for suite in (own, f"{own}-backports", "sid") for kind in ("deb", "deb-src")]
    (apt / "sources.list").write_text("\n".join(lines) + "\n")
    (apt / "apt.conf").write_text(
        f'Dir::State "{apt}";\nDir::State::Lists "{apt}/lists";\nDir::Cache "{apt}/cache";\n'
        f'Dir::Etc::SourceList "{apt}/sources.list";\nDir::Etc::SourceParts "/nonexistent";\n'
        'Dir::State::status "/var/lib/dpkg/status";\n'
    )
    env = {"APT_CONFIG": str(apt / "apt.conf"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    _run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    names = subprocess.run(["apt-cache", "pkgnames", "linux-source-"], env=env, capture_output=True, text=True).stdout.split()
    newest = max((n for n in names if re.fullmatch(r"linux-source-\d+\.\d+", n)),
                 key=lambda n: tuple(int(x) for x in n.rsplit("-", 1)[1].split(".")))
    _run(["apt-get", "download", "-q", newest], env=env, cwd=dest)
    deb = next(dest.glob(f"{newest}_*.deb"))
    ver = newest.rsplit("-", 1)[1]
    out = dest / newest
    out.mkdir(exist_ok=True)
    pats = [f"*/{f}" for f in LINUX_FILES]
    _run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO ./usr/src/linux-source-{ver}.tar.xz | xz -dc | "
          f"tar -x -C '{out}' --strip-components=1 --wildcards " + " ".join(f"'{p}'" for p in pats)])
    limit = len(qemu_versions) or 3
    if not qemu_versions:
        qemu_versions = _default_qemu_versions(env)
    done: list[str] = []
    for qv in qemu_versions:
        if len(done) >= limit:
            break
        got = subprocess.run(["apt-get", "source", "-q", "--download-only", f"qemu={qv}"], env=env, cwd=dest,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        upstream = qv.split(":", 1)[-1].rsplit("-", 1)[0]
        orig = next(dest.glob(f"qemu_{upstream}.orig.tar.*"), None)
        if orig is None:  # only the upstream tarball is needed; a missing .dsc does not matter
            print(f"qemu source {qv}: not downloadable from the mirror (rc {got.returncode}), skipped", file=sys.stderr)
            continue
        qdir = dest / f"qemu-{upstream.split('+')[0]}"
        qdir.mkdir(exist_ok=True)
        _run(["tar", "-xf", str(orig), "-C", str(qdir), "--strip-components=1", "--wildcards",
              *[f"*/{f}" for f in QEMU_FILES]])
        done.append(qdir.name)
    print(f"sources in {dest}: {newest} and {', '.join(done)}", file=sys.stderr)


def _default_qemu_versions(env: dict) -> list[str]:
    """The machine's own QEMU source version, then the others the mirror lists, newest first."""
    text = subprocess.run(["apt-cache", "showsrc", "qemu"], env=env, capture_output=True, text=True).stdout
    versions = sorted(set(re.findall(r"^Version:\s*(\S+)", text, re.M)), key=_debver_key)
    own = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-system-x86"],
                         capture_output=True, text=True).stdout.strip()
    picked = [own] if own else []
    picked += [v for v in versions[::-1] if v != own and not v.startswith(own.split("+")[0])]
    return picked


def _debver_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[^0-9]+", v.split(":", 1)[-1]) if x)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fetch", type=Path, metavar="DIR", help="download and unpack the sources into DIR, then stop")
    ap.add_argument("--qemu-version", action="append", default=[],
                    help="Debian qemu source version for --fetch (repeatable; default: the installed one and the newest two)")
    ap.add_argument("--linux", type=Path, help="Linux source tree")
    ap.add_argument("--qemu", type=Path, action="append", default=[], help="QEMU source tree (repeatable, oldest first)")
    ap.add_argument("--extra", type=Path, default=here / "catalogue_extra.toml")
    ap.add_argument("-o", "--output", type=Path, default=here.parent / "rig/cpuid/data/features.toml")
    args = ap.parse_args(argv)
    if args.fetch:
        fetch(args.fetch, args.qemu_version)
        return 0
    if not args.linux or not args.qemu:
        ap.error("--linux and at least one --qemu are required (or --fetch DIR)")
    entries, fields, meta = build(args.linux, args.qemu, args.extra)
    scope = {(int(w["leaf"]), int(w.get("subleaf", 0)), w["reg"]) for w in tomllib.loads(args.extra.read_text())["scope"]}
    text = render(entries, fields, meta, scope)
    tomllib.loads(text)  # must parse
    args.output.write_text(text)
    print(f"{args.output}: {len(entries)} features, {len(fields)} fields", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
