"""Extract CPU-model facts from a QEMU source tree into ``rig/qemu/data/qemu-X.Y.toml``.

Facts only (bit positions, masks, names), never code: for every CPUID feature
word of ``feature_word_info[]`` in ``target/i386/cpu.c`` its input leaf/subleaf,
register, property names per bit, the TCG-supported mask (``tcg_features``,
with the ``TCG_*``/``CPUID_*`` macros of ``cpu.c``/``cpu.h`` evaluated for a
64-bit system emulator), ``no_autoenable_flags``; ``feature_dependencies[]``
between CPUID words; the XSAVE components of ``x86_ext_save_areas[]`` and the
XCR0/XSS masks.  Run::

    python3 -m rig.qemu.srcfacts QEMU_SOURCE_DIR 7.2 > rig/qemu/data/qemu-7.2.toml

The hand-written behaviour rules (accelerator default properties, level
raising, machine version resolution, KVM fix-ups) live in
``rig/qemu/data/behaviour.toml``; this tool does not touch them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RigError

#: preprocessor symbols of a 64-bit x86 system emulator build
DEFINED = frozenset({"TARGET_X86_64"})
#: macros from linux-headers that cpu.c uses (KVM paravirtual leaf, arch/x86/include/uapi/asm/kvm_para.h)
BUILTIN_DEFINES = {"KVM_CPUID_FEATURES": "0x40000001", "KVM_CPUID_SIGNATURE": "0x40000000"}
REGS = {"R_EAX": "eax", "R_EBX": "ebx", "R_ECX": "ecx", "R_EDX": "edx"}


class SourceFactsError(RigError):
    pass


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: " " * 0 + "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _if_value(expr: str) -> bool:
    """Value of a simple ``#if`` expression (defined(), !, &&, ||); unknown names are 0."""
    e = re.sub(r"defined\s*\(?\s*(\w+)\s*\)?", lambda m: "1" if m.group(1) in DEFINED else "0", expr)
    e = re.sub(r"\b[A-Za-z_]\w*\b", "0", e).replace("&&", " and ").replace("||", " or ")
    e = re.sub(r"!(?!=)", " not ", e)
    try:
        return bool(eval(e))  # noqa: S307 - digits, operators and and/or/not only
    except SyntaxError:
        return True


def _preprocess(text: str) -> str:
    """Keep the lines a 64-bit system-emulator build compiles (#if/#ifdef/#ifndef/#elif/#else/#endif)."""
    out: list[str] = []
    # per level: [this branch active, some branch already taken]
    stack: list[list[bool]] = []
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"#\s*(ifdef|ifndef)\s+(\w+)", s)
        mi = re.match(r"#\s*if\b(.*)", s)
        me = re.match(r"#\s*elif\b(.*)", s)
        if m:
            cond = (m.group(2) in DEFINED) == (m.group(1) == "ifdef")
            stack.append([cond, cond])
        elif mi:
            cond = _if_value(mi.group(1))
            stack.append([cond, cond])
        elif me and stack:
            cond = not stack[-1][1] and _if_value(me.group(1))
            stack[-1] = [cond, stack[-1][1] or cond]
        elif re.match(r"#\s*else\b", s) and stack:
            stack[-1] = [not stack[-1][1], True]
        elif re.match(r"#\s*endif\b", s) and stack:
            stack.pop()
        else:
            out.append(line if all(c[0] for c in stack) else "")
            continue
        out.append("")
    return "\n".join(out)


def collect_defines(*texts: str) -> dict[str, str]:
    defs: dict[str, str] = dict(BUILTIN_DEFINES)
    for text in texts:
        text = _preprocess(_strip_comments(text).replace("\\\n", " "))
        for m in re.finditer(r"^\s*#\s*define\s+(\w+)(?!\()\s+(.+)$", text, re.M):
            defs.setdefault(m.group(1), m.group(2).strip())
    return defs


class MacroEval:
    def __init__(self, defines: dict[str, str]) -> None:
        self.defines = defines
        self._cache: dict[str, int] = {}

    def eval(self, expr: str, depth: int = 0) -> int:
        if depth > 40:
            raise SourceFactsError(f"macro recursion too deep in {expr!r}")
        e = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)(?:ULL|UL|U|ull|ul|u|LL|L)\b", r"\1", expr)

        def sub(m: re.Match[str]) -> str:
            name = m.group(0)
            if name in self._cache:
                return str(self._cache[name])
            if name not in self.defines:
                raise SourceFactsError(f"unknown macro {name} in {expr!r}")
            v = self.eval(self.defines[name], depth + 1)
            self._cache[name] = v
            return str(v)

        e = re.sub(r"\b[A-Za-z_]\w*\b", sub, e)
        if not re.fullmatch(r"[\s0-9xXa-fA-F()|&~<>+\-*]*", e):
            raise SourceFactsError(f"cannot evaluate {expr!r}")
        return eval("(" + e + ")") & 0xFFFFFFFFFFFFFFFF  # noqa: S307 - digits and operators only (checked above)


def _block(text: str, start: int) -> tuple[str, int]:
    """The text inside the braces opening at or after ``start``; returns (inner, end)."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    raise SourceFactsError("unbalanced braces")


def _entries(body: str) -> list[tuple[str, str]]:
    """``[NAME] = { ... }`` entries of a designated-initialiser array."""
    out = []
    pos = 0
    while True:
        m = re.compile(r"\[(\w+)\]\s*=\s*\{").search(body, pos)
        if not m:
            return out
        inner, pos = _block(body, m.end() - 1)
        out.append((m.group(1), inner))


def _field(inner: str, name: str) -> str | None:
    m = re.search(r"\." + re.escape(name) + r"\s*=\s*([^,}]+(?:\([^)]*\)[^,}]*)*)", inner)
    return m.group(1).strip() if m else None


def _expr_field(inner: str, name: str) -> str | None:
    """A ``.name = EXPR,`` field whose expression may span lines and parentheses."""
    m = re.search(r"\." + re.escape(name) + r"\s*=\s*", inner)
    if not m:
        return None
    depth, j = 0, m.end()
    while j < len(inner):
        c = inner[j]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c in ",}" and depth == 0:
            break
        j += 1
    return inner[m.end() : j].strip()


@dataclass
class Word:
    name: str
    leaf: int
    subleaf: int | None
    reg: str
    names: list[str | None]
    tcg: int
    no_autoenable: int
    migratable: int
    unmigratable: int


@dataclass
class Facts:
    version: str
    words: list[Word] = field(default_factory=list)
    deps: list[tuple[str, int, str, int]] = field(default_factory=list)
    xsave: list[tuple[int, str, int]] = field(default_factory=list)
    xcr0_mask: int = 0
    xss_mask: int = 0
    aliases: dict[str, str] = field(default_factory=dict)
    amd_aliases: int = 0
    #: builtin model name -> (level, xlevel, vme in its definition)
    models: dict[str, tuple[int, int, bool]] = field(default_factory=dict)


def extract(src: Path, version: str) -> Facts:
    cpu_c = (src / "target/i386/cpu.c").read_text()
    cpu_h = (src / "target/i386/cpu.h").read_text()
    defines = collect_defines(cpu_c, cpu_h)
    ev = MacroEval(defines)
    code = _preprocess(_strip_comments(cpu_c))
    facts = Facts(version)
    m = re.search(r"FeatureWordInfo feature_word_info\[FEATURE_WORDS\]\s*=\s*", code)
    if not m:
        raise SourceFactsError(f"{src}: feature_word_info[] not found")
    body, _ = _block(code, m.end())
    for name, inner in _entries(body):
        if "CPUID_FEATURE_WORD" not in (_field(inner, "type") or ""):
            continue
        cm = re.search(r"\.cpuid\s*=\s*\{", inner)
        cpuid, _ = _block(inner, cm.start())
        leaf = ev.eval(_field(cpuid, "eax") or "0")
        needs_ecx = (_field(cpuid, "needs_ecx") or "false") == "true"
        subleaf = ev.eval(_field(cpuid, "ecx") or "0") if needs_ecx else None
        reg = REGS[_field(cpuid, "reg") or "R_EAX"]
        names: list[str | None] = [None] * 32
        fm = re.search(r"\.feat_names\s*=\s*\{", inner)
        if fm:
            fn, _ = _block(inner, fm.start())
            items = [x.strip() for x in fn.split(",") if x.strip()]
            i = 0
            for it in items:
                dm = re.match(r"\[(\d+)\]\s*=\s*(.*)", it)
                if dm:  # designated initialiser: [16] = "avx10-128"
                    i, it = int(dm.group(1)), dm.group(2).strip()
                if i < 32:
                    names[i] = None if it == "NULL" else it.strip('"')
                i += 1

        def mask(f: str, default: int = 0, inner: str = inner) -> int:
            e = _expr_field(inner, f)
            return default if e is None else ev.eval(e) & 0xFFFFFFFF

        facts.words.append(Word(name, leaf, subleaf, reg, names, mask("tcg_features"), mask("no_autoenable_flags"),
                                mask("migratable_flags"), mask("unmigratable_flags")))
    cpuid_words = {w.name for w in facts.words}
    m = re.search(r"FeatureDep feature_dependencies\[\]\s*=\s*", code)
    if m:
        body, _ = _block(code, m.end())
        for dm in re.finditer(r"\.from\s*=\s*\{\s*(\w+)\s*,\s*([^}]+)\}\s*,\s*\.to\s*=\s*\{\s*(\w+)\s*,\s*([^}]+)\}", body):
            fw, fx, tw, tx = dm.groups()
            if fw in cpuid_words and tw in cpuid_words:
                facts.deps.append((fw, ev.eval(fx) & 0xFFFFFFFF, tw, ev.eval(tx) & 0xFFFFFFFF))
    m = re.search(r"ExtSaveArea x86_ext_save_areas\[\w+\]\s*=\s*", code)
    if m:
        body, _ = _block(code, m.end())
        for name, inner in _entries(body):
            facts.xsave.append((ev.eval(name), _field(inner, "feature") or "", ev.eval(_field(inner, "bits") or "0")))
    facts.xcr0_mask = ev.eval("CPUID_XSTATE_XCR0_MASK")
    facts.xss_mask = ev.eval("CPUID_XSTATE_XSS_MASK")
    facts.amd_aliases = ev.eval("CPUID_EXT2_AMD_ALIASES")
    m = re.search(r"X86CPUDefinition builtin_x86_defs\[\]\s*=\s*", code)
    if m:
        body, _ = _block(code, m.end())
        pos = 0
        vme = ev.eval("CPUID_VME")
        while (nm := re.compile(r"\{\s*\.name\s*=\s*\"([^\"]+)\"").search(body, pos)):
            inner, pos = _block(body, nm.start())
            edx = _expr_field(inner, "features[FEAT_1_EDX]")
            level = _expr_field(inner, "level")
            xlevel = _expr_field(inner, "xlevel")
            facts.models[nm.group(1)] = (ev.eval(level) if level else 0, ev.eval(xlevel) if xlevel else 0,
                                        bool(edx and ev.eval(edx) & vme))
    for am in re.finditer(r'object_property_add_alias\(obj,\s*"([^"]+)",\s*obj,\s*"([^"]+)"\)', code):
        facts.aliases[am.group(1)] = am.group(2)
    return facts


def to_toml(f: Facts, src: str = "") -> str:
    out = [
        f"# QEMU {f.version} CPUID feature-word facts, extracted by rig.qemu.srcfacts from target/i386/cpu.c",
        "# and cpu.h of the Debian source package" + (f" ({src})" if src else "") + ". Do not edit by hand.",
        f'version = "{f.version}"',
        f"xcr0_mask = 0x{f.xcr0_mask:X}",
        f"xss_mask = 0x{f.xss_mask:X}",
        f"amd_aliases = 0x{f.amd_aliases:08X}",
        "",
    ]
    for w in f.words:
        out.append("[[word]]")
        out.append(f'name = "{w.name}"')
        out.append(f"leaf = 0x{w.leaf:X}")
        if w.subleaf is not None:
            out.append(f"subleaf = {w.subleaf}")
        out.append(f'reg = "{w.reg}"')
        out.append(f"tcg = 0x{w.tcg:08X}")
        if w.no_autoenable:
            out.append(f"no_autoenable = 0x{w.no_autoenable:08X}")
        if w.migratable:
            out.append(f"migratable = 0x{w.migratable:08X}")
        if w.unmigratable:
            out.append(f"unmigratable = 0x{w.unmigratable:08X}")
        nm = ", ".join(f'"{n}"' if n else '""' for n in w.names)
        out.append(f"names = [{nm}]")
        out.append("")
    for fw, fx, tw, tx in f.deps:
        out.append("[[dependency]]")
        out.append(f'from = "{fw}"\nfrom_mask = 0x{fx:08X}\nto = "{tw}"\nto_mask = 0x{tx:08X}\n')
    for comp, word, bits in f.xsave:
        out.append("[[xsave]]")
        out.append(f'component = {comp}\nword = "{word}"\nmask = 0x{bits:08X}\n')
    for name, (level, xlevel, vme) in f.models.items():
        out.append(f'[model."{name}"]')
        out.append(f"level = 0x{level:X}\nxlevel = 0x{xlevel:X}\nvme = {'true' if vme else 'false'}\n")
    out.append("[aliases]")
    for a, t in sorted(f.aliases.items()):
        out.append(f'"{a}" = "{t}"')
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m rig.qemu.srcfacts QEMU_SOURCE_DIR VERSION", file=sys.stderr)
        return 2
    facts = extract(Path(args[0]), args[1])
    sys.stdout.write(to_toml(facts, Path(args[0]).name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
