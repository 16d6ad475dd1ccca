"""Just enough C reading for the policy importer: comments, #ifdefs, functions, statements.

The kernel functions the importer reads (``kvm_set_cpu_caps``,
``kvm_initialize_cpu_caps``, ``svm_set_cpu_caps``, ``sev_set_cpu_caps``,
``vmx_set_cpu_caps``, ``kvm_setup_xss_caps``) are straight-line code with
``if``/``else`` and blocks.  :func:`statements` turns a function body into a
flat list of :class:`CStmt` (text, line, the conditions it sits under), which
the importer then translates into policy steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RigError

#: kernel configuration the Debian amd64 kernels build with (what #ifdef/IS_ENABLED see)
CONFIG_ON = frozenset({"X86_64", "KVM_AMD_SEV", "KVM_HYPERV", "KVM_XEN", "X86_SGX_KVM", "KVM_INTEL", "KVM_AMD",
                       "KVM_SMM", "X86_FEATURE_NAMES"})


class CParseError(RigError):
    pass


def strip_comments(text: str) -> str:
    """Blank out comments and string contents' comment markers, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def comments_of(text: str) -> list[tuple[int, str]]:
    """(line, text) of each /* */ comment, for BIT(n) /* NAME */ terms."""
    res = []
    for m in re.finditer(r"/\*(.*?)\*/", text, re.S):
        res.append((text.count("\n", 0, m.start()) + 1, m.group(1).strip()))
    return res


def _cfg_true(expr: str, config: frozenset[str]) -> bool:
    expr = expr.strip()
    m = re.fullmatch(r"(?:defined\s*\(?\s*CONFIG_(\w+)\s*\)?|IS_ENABLED\(CONFIG_(\w+)\)|CONFIG_(\w+))", expr)
    if m:
        return (m.group(1) or m.group(2) or m.group(3)) in config
    if expr.startswith("!"):
        return not _cfg_true(expr[1:], config)
    if "||" in expr:
        return any(_cfg_true(p, config) for p in expr.split("||"))
    if "&&" in expr:
        return all(_cfg_true(p, config) for p in expr.split("&&"))
    return expr not in ("0",)


def preprocess(text: str, config: frozenset[str] = CONFIG_ON) -> str:
    """Resolve #if/#ifdef/#ifndef/#else/#endif for ``config``; drop other directives. Keeps line numbers."""
    lines = text.split("\n")
    out = []
    stack: list[tuple[bool, bool]] = []  # (this branch active, some branch taken)
    i = 0
    while i < len(lines):
        line = lines[i]
        full = line
        n_extra = 0
        while full.rstrip().endswith("\\") and i + 1 + n_extra < len(lines):
            n_extra += 1
            full = full.rstrip()[:-1] + " " + lines[i + n_extra]
        s = full.strip()
        if s.startswith("#"):
            d = s[1:].strip()
            if d.startswith("ifdef"):
                v = _cfg_true("defined " + d[5:].strip(), config)
                stack.append((v, v))
            elif d.startswith("ifndef"):
                v = not _cfg_true("defined " + d[6:].strip(), config)
                stack.append((v, v))
            elif d.startswith("if"):
                v = _cfg_true(d[2:], config)
                stack.append((v, v))
            elif d.startswith("elif") and stack:
                _a, taken = stack.pop()
                v = not taken and _cfg_true(d[4:], config)
                stack.append((v, taken or v))
            elif d.startswith("else") and stack:
                _a, taken = stack.pop()
                stack.append((not taken, True))
            elif d.startswith("endif") and stack:
                stack.pop()
            out.extend([""] * (1 + n_extra))
            i += 1 + n_extra
            continue
        active = all(a for a, _ in stack)
        for k in range(1 + n_extra):
            out.append(lines[i + k] if active else "")
        i += 1 + n_extra
    return "\n".join(out)


def _match(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket matching text[i] (== open_ch)."""
    depth = 0
    j = i
    n = len(text)
    while j < n:
        c = text[j]
        if c == '"':
            j += 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise CParseError(f"unbalanced {open_ch}{close_ch} at offset {i}")


@dataclass(frozen=True)
class CFunction:
    name: str
    body: str  # text between the braces (comments blanked, preprocessed)
    line: int  # line of the opening brace
    raw_body: str  # with comments (for BIT(n) /* NAME */)


def find_function(text: str, name: str, clean: str | None = None) -> CFunction | None:
    """The definition of function ``name`` (not a prototype or call)."""
    clean = clean if clean is not None else preprocess(strip_comments(text))
    for m in re.finditer(rf"(?m)^[A-Za-z_][\w \t\*]*\b{re.escape(name)}\s*\(([^;{{)]*)\)\s*\{{", clean):
        start = m.end() - 1
        end = _match(clean, start, "{", "}")
        line = clean.count("\n", 0, start) + 1
        return CFunction(name, clean[start + 1:end - 1], line, text[start + 1:end - 1])
    return None


@dataclass(frozen=True)
class CStmt:
    text: str  # one statement, whitespace-normalised, without the trailing ';'
    line: int
    conds: tuple[str, ...]  # C conditions (already negated for else branches: "!(...)")
    raw: str = ""  # the statement with comments (same span)


def _ws(s: str) -> str:
    return " ".join(s.split())


def statements(fn: CFunction) -> list[CStmt]:
    body = fn.body
    raw = fn.raw_body
    out: list[CStmt] = []

    def line_at(i: int) -> int:
        return fn.line + body.count("\n", 0, i)

    def skip_ws(i: int) -> int:
        while i < len(body) and body[i].isspace():
            i += 1
        return i

    def parse_one(i: int, conds: tuple[str, ...]) -> int:
        i = skip_ws(i)
        if i >= len(body):
            return i
        if body[i] == "{":
            end = _match(body, i, "{", "}")
            parse_seq(i + 1, end - 1, conds)
            return end
        m = re.match(r"if\s*\(", body[i:])
        if m:
            p = i + m.end() - 1
            pend = _match(body, p, "(", ")")
            c = _ws(body[p + 1:pend - 1])
            j = parse_one(pend, (*conds, c))
            k = skip_ws(j)
            if re.match(r"else\b", body[k:]):
                j = parse_one(k + 4, (*conds, f"!({c})"))
            return j
        m = re.match(r"(for|while|switch)\s*\(", body[i:])
        if m:
            p = i + m.end() - 1
            pend = _match(body, p, "(", ")")
            k = skip_ws(pend)
            if k < len(body) and body[k] == "{":
                end = _match(body, k, "{", "}")
            else:
                end = body.find(";", k) + 1
            out.append(CStmt(_ws(body[i:end]), line_at(i), conds, raw[i:end]))
            return end
        # simple statement up to ';' at depth 0
        depth = 0
        j = i
        while j < len(body):
            ch = body[j]
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif ch == '"':
                j = body.index('"', j + 1)
            elif ch == ";" and depth == 0:
                break
            j += 1
        out.append(CStmt(_ws(body[i:j]), line_at(i), conds, raw[i:j]))
        return j + 1

    def parse_seq(i: int, end: int, conds: tuple[str, ...]) -> None:
        while True:
            i = skip_ws(i)
            if i >= end:
                return
            i = parse_one(i, conds)

    parse_seq(0, len(body), ())
    return out


def split_args(text: str) -> list[str]:
    """Top-level comma split of a call's argument text."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def split_top(text: str, op: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == op and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def call(text: str) -> tuple[str, list[str]] | None:
    """``name(args)`` -> (name, args) when the whole statement is one call."""
    m = re.match(r"^([A-Za-z_]\w*)\s*\(", text)
    if not m:
        return None
    p = m.end() - 1
    try:
        end = _match(text, p, "(", ")")
    except CParseError:
        return None
    if text[end:].strip():
        return None
    return m.group(1), split_args(text[p + 1:end - 1])
