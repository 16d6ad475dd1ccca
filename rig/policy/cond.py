"""Conditions of policy rules: a tiny boolean language shared by C and data.

A condition in a policy file is a string such as
``has(AMD_IBPB_RET) && has(AMD_IBPB) && !bug(EIBRS_PBRSB)``.  Atoms:

=================  =========================================================
``has(X)``         the host kernel has ``X86_FEATURE_X`` (boot_cpu_has)
``bug(X)``         the host kernel has ``X86_BUG_X``
``cap(X)``         KVM's capability word already has ``X`` (kvm_cpu_cap_has)
``raw(X)``         the raw host CPUID has the bit of ``X``
``var(name)``      a KVM variable (module parameter such as ``nested``)
``config(X)``      kernel configuration option ``CONFIG_X`` (64-bit Debian)
``c("text")``      C the importer could not translate; the policy's
                   ``expressions`` table maps it to a condition
``true``/``false``
=================  =========================================================

with ``!``, ``&&``, ``||`` and parentheses.  :func:`parse_c` reads the C
spelling the kernel uses (``boot_cpu_has(X86_FEATURE_X)``...) into the same
tree, so the importer and the evaluator agree by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from ..errors import RigError


class ConditionError(RigError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Atom:
    kind: str  # has bug cap raw var config c true false
    arg: str = ""

    def __str__(self) -> str:
        if self.kind in ("true", "false"):
            return self.kind
        if self.kind == "c":
            return 'c("' + self.arg.replace('"', "'") + '")'
        return f"{self.kind}({self.arg})"


@dataclass(frozen=True, slots=True)
class Not:
    x: Node

    def __str__(self) -> str:
        inner = str(self.x)
        return f"!{inner}" if isinstance(self.x, Atom) else f"!({inner})"


@dataclass(frozen=True, slots=True)
class And:
    xs: tuple[Node, ...]

    def __str__(self) -> str:
        return " && ".join(f"({x})" if isinstance(x, Or) else str(x) for x in self.xs)


@dataclass(frozen=True, slots=True)
class Or:
    xs: tuple[Node, ...]

    def __str__(self) -> str:
        return " || ".join(str(x) for x in self.xs)


Node = Atom | Not | And | Or

TRUE = Atom("true")
KINDS = ("has", "bug", "cap", "raw", "var", "config", "c")


def _split_top(text: str, op: str) -> list[str]:
    parts, depth, start, i, quote = [], 0, 0, 0, False
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quote = not quote
        elif not quote:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif depth == 0 and text.startswith(op, i):
                parts.append(text[start:i])
                i += len(op)
                start = i
                continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _strip_parens(text: str) -> str:
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        text = text[1:-1].strip()
    return text


def _parse(text: str, atom: Callable[[str], Node], where: str) -> Node:
    text = _strip_parens(text.strip())
    if not text:
        raise ConditionError(f"{where}: empty condition")
    ors = _split_top(text, "||")
    if len(ors) > 1:
        return Or(tuple(_parse(p, atom, where) for p in ors))
    ands = _split_top(text, "&&")
    if len(ands) > 1:
        return And(tuple(_parse(p, atom, where) for p in ands))
    if text.startswith("!") and not text.startswith("!="):
        return Not(_parse(text[1:], atom, where))
    return atom(text)


_DSL_ATOM = re.compile(r'^(has|bug|cap|raw|var|config)\((\w+)\)$|^c\("(.*)"\)$|^(true|false)$')


def _dsl_atom_for(where: str) -> Callable[[str], Node]:
    def atom(text: str) -> Node:
        m = _DSL_ATOM.match(text)
        if not m:
            raise ConditionError(f"{where}: cannot read condition atom {text!r}")
        if m.group(1):
            return Atom(m.group(1), m.group(2))
        if m.group(4):
            return Atom(m.group(4))
        return Atom("c", m.group(3))

    return atom


def parse(text: str | None, where: str = "condition") -> Node:
    """Parse the policy-file spelling; ``None`` or empty means always true."""
    if text is None or not str(text).strip():
        return TRUE
    return _parse_cached(str(text), where)


@lru_cache(maxsize=4096)
def _parse_cached(text: str, where: str) -> Node:
    return _parse(text, _dsl_atom_for(where), where)


_C_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:boot_cpu_has|static_cpu_has|cpu_feature_enabled|this_cpu_has)\(X86_FEATURE_(\w+)\)$"), "has"),
    (re.compile(r"^(?:boot_cpu_has_bug|static_cpu_has_bug)\(X86_BUG_(\w+)\)$"), "bug"),
    (re.compile(r"^kvm_cpu_cap_has\(X86_FEATURE_(\w+)\)$"), "cap"),
    (re.compile(r"^cpuid_e[abcd]x\(\w+\)\s*&\s*(?:F|feature_bit)\((\w+)\)$"), "raw"),
    (re.compile(r"^IS_ENABLED\(CONFIG_(\w+)\)$"), "config"),
    (re.compile(r"^([A-Za-z_]\w*)$"), "var"),
)

_WRAPPERS = re.compile(r"^(?:WARN_ON_ONCE|WARN_ON|unlikely|likely)\((.*)\)$", re.S)


def _c_atom(text: str) -> Node:
    text = " ".join(text.split())
    m = _WRAPPERS.match(text)
    if m:
        return parse_c(m.group(1))
    if text in ("true", "1"):
        return TRUE
    if text in ("false", "0"):
        return Atom("false")
    for pat, kind in _C_PATTERNS:
        m = pat.match(text)
        if m:
            return Atom(kind, m.group(1))
    return Atom("c", text)


def parse_c(text: str) -> Node:
    """Translate a C condition from the kernel into the policy language."""
    return _parse(" ".join(text.split()), _c_atom, "C condition")


def atoms(node: Node) -> list[Atom]:
    if isinstance(node, Atom):
        return [node]
    if isinstance(node, Not):
        return atoms(node.x)
    out: list[Atom] = []
    for x in node.xs:
        out.extend(atoms(x))
    return out


def evaluate(node: Node, value: Callable[[Atom], bool]) -> bool:
    if isinstance(node, Atom):
        if node.kind == "true":
            return True
        if node.kind == "false":
            return False
        return bool(value(node))
    if isinstance(node, Not):
        return not evaluate(node.x, value)
    if isinstance(node, And):
        return all(evaluate(x, value) for x in node.xs)
    return any(evaluate(x, value) for x in node.xs)
