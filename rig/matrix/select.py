"""Choosing cases: ``-k`` expressions (as in pytest) and ``--shard i/n``.

``-k`` takes words joined by ``and``, ``or``, ``not`` and parentheses; a word
matches a case when it is a case-insensitive substring of the case ID or equals
one of its fields (model, variant, machine, accel, guest, host, group).
Shards split by the case's hash, so a case stays in the same shard when cases
are added to or removed from the matrix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..errors import RigError
from ..results import Case


class SelectError(RigError):
    pass


#: deeper parentheses in -k are refused (Python's recursion limit would otherwise end the parse)
MAX_NESTING = 100
_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def parse_k(expr: str) -> Callable[[Case], bool]:
    tokens = [m.group(1) for m in _TOKEN.finditer(expr)]
    pos = 0
    depth = [0]

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        t = tokens[pos]
        pos += 1
        return t

    def p_or() -> Callable[[Case], bool]:
        left = p_and()
        while peek() == "or":
            take()
            right = p_and()
            left = (lambda a, b: lambda c: a(c) or b(c))(left, right)
        return left

    def p_and() -> Callable[[Case], bool]:
        left = p_not()
        while peek() == "and":
            take()
            right = p_not()
            left = (lambda a, b: lambda c: a(c) and b(c))(left, right)
        return left

    def p_not() -> Callable[[Case], bool]:
        negate = False
        while peek() == "not":  # a loop: "not not ... x" must not recurse once per word
            take()
            negate = not negate
        inner = p_atom()
        return (lambda c: not inner(c)) if negate else inner

    def p_atom() -> Callable[[Case], bool]:
        t = peek()
        if t is None:
            raise SelectError(f"-k {expr!r}: expression ends early (expected a word or '(')")
        if t == "(":
            take()
            depth[0] += 1
            if depth[0] > MAX_NESTING:
                raise SelectError(f"-k {expr[:40]!r}...: parentheses nested too deeply (more than {MAX_NESTING})")
            inner = p_or()
            depth[0] -= 1
            if peek() != ")":
                raise SelectError(f"-k {expr!r}: missing ')'")
            take()
            return inner
        if t in (")", "and", "or"):
            raise SelectError(f"-k {expr!r}: unexpected {t!r} (expected a word, 'not' or '(')")
        word = take().lower()
        return lambda c: word in c.id.lower() or word in (
            c.model.lower(), c.variant.lower(), c.machine.lower(), c.accel, c.guest, c.host.lower(), c.group.lower())

    if not tokens:
        raise SelectError("-k: empty expression")
    fn = p_or()
    if pos != len(tokens):
        raise SelectError(f"-k {expr!r}: unexpected {tokens[pos]!r} after a complete expression")
    return fn


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise SelectError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def in_shard(case: Case, shard: tuple[int, int]) -> bool:
    i, n = shard
    return int(case.digest, 16) % n == i - 1


def select(cases: Sequence[Case], *, k: str | None = None, shard: tuple[int, int] | None = None) -> list[Case]:
    pred = parse_k(k) if k else None
    return [c for c in cases if (pred is None or pred(c)) and (shard is None or in_shard(c, shard))]
