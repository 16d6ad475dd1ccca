"""Reading matrix TOML files (schema in matrices/README.md) into :class:`~rig.matrix.model.Matrix`.

Every error names the file, the key and what was expected, e.g.
``matrices/x.toml: group[1].accels[0]: 'kv' is not an accelerator (expected one of: tcg, kvm)``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from ..errors import RigError
from .model import (
    ACCELS,
    DEFAULT_FAIL_ON,
    FINDING_CLASSES,
    GUESTS,
    PROBLEM_OUTCOMES,
    Group,
    KnownIssue,
    Matrix,
    VariantSpec,
)

GENERATORS = ("model-features-off", "catalogue-features-on")
GROUP_KEYS = {"name", "models", "variants", "machines", "accels", "guests", "qemu", "hosts", "timeout", "exclude"}
DEFAULT_KEYS = GROUP_KEYS - {"name", "models", "exclude"}
MATCH_KEYS = ("model", "variant", "machine", "accel", "guest", "host", "qemu", "qemu_version", "case")
_HOST = re.compile(r"^(native|simulate(:[^@\s]+(@\S+)?)?"
                   r"|emulated:[A-Za-z0-9_.-]+@[0-9A-Za-z.+~-]+(,[A-Za-z0-9_.]+=[A-Za-z0-9_.-]+)*)$")
#: a guest, optionally with an argument: ``linux@6.1`` (the Debian kernel of the linux guest)
_GUEST = re.compile(r"^(" + "|".join(GUESTS) + r")(@[0-9A-Za-z.+~-]+)?$")
_FLAG = re.compile(r"^([+-][A-Za-z0-9_.-]+|[A-Za-z0-9_.-]+=(on|off|true|false))$")


class MatrixError(RigError):
    """A matrix or known-issues file is malformed."""


class _Ctx:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, msg: str) -> MatrixError:
        return MatrixError(f"{self.where}: {key}: {msg}")

    def str_list(self, d: dict, key: str, path: str, *, default: tuple[str, ...] | None = None,
                 allowed: tuple[str, ...] | None = None, pattern: re.Pattern | None = None,
                 what: str = "string") -> tuple[str, ...]:
        if key not in d:
            if default is None:
                raise self.fail(f"{path}{key}", f"missing (expected a list of {what}s)")
            return default
        v = d[key]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v:
            raise self.fail(f"{path}{key}", f"expected a non-empty list of {what}s, got {v!r}")
        for i, item in enumerate(v):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{path}{key}[{i}]", f"expected a {what}, got {item!r}")
            if allowed is not None and item not in allowed:
                raise self.fail(f"{path}{key}[{i}]", f"{item!r} is not a {what} (expected one of: {', '.join(allowed)})")
            if pattern is not None and not pattern.match(item):
                raise self.fail(f"{path}{key}[{i}]", f"{item!r} is not a valid {what}")
        return tuple(v)

    def number(self, d: dict, key: str, path: str, default: float) -> float:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise self.fail(f"{path}{key}", f"expected a positive number of seconds, got {v!r}")
        return float(v)


def _unknown(ctx: _Ctx, d: dict, allowed: set[str], path: str) -> None:
    for k in d:
        if k not in allowed:
            raise ctx.fail(f"{path}{k}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def _variants(ctx: _Ctx, d: dict, path: str, default: tuple[VariantSpec, ...]) -> tuple[VariantSpec, ...]:
    if "variants" not in d:
        return default
    v = d["variants"]
    if not isinstance(v, list) or not v:
        raise ctx.fail(f"{path}variants", "expected a non-empty list of tables such as { name = \"no-avx2\", flags = [\"-avx2\"] }")
    out = []
    for i, item in enumerate(v):
        p = f"{path}variants[{i}]"
        if isinstance(item, str):
            item = {"name": item} if item == "default" else {"flags": [f for f in item.split(",") if f]}
        if not isinstance(item, dict):
            raise ctx.fail(p, f"expected a table {{ name, flags }} or {{ generate }}, got {item!r}")
        _unknown(ctx, item, {"name", "flags", "generate", "skip"}, p + ".")
        gen = item.get("generate")
        if gen is not None:
            if gen not in GENERATORS:
                raise ctx.fail(p + ".generate", f"{gen!r} is not a generator (expected one of: {', '.join(GENERATORS)})")
            if "flags" in item:
                raise ctx.fail(p, "a variant has either 'flags' or 'generate', not both")
            skip = ctx.str_list(item, "skip", p + ".", default=(), what="QEMU feature name")
            out.append(VariantSpec(generate=gen, skip=skip))
            continue
        flags = ctx.str_list(item, "flags", p + ".", default=(), pattern=_FLAG, what="flag (+f, -f, f=on, f=off)")
        name = item.get("name")
        if name is None:
            name = ",".join(flags) if flags else "default"
        if not isinstance(name, str) or not name:
            raise ctx.fail(p + ".name", f"expected a non-empty string, got {name!r}")
        out.append(VariantSpec(name=name, flags=flags))
    return tuple(out)


def _exclude(ctx: _Ctx, d: dict, path: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    v = d.get("exclude", [])
    if not isinstance(v, list):
        raise ctx.fail(f"{path}exclude", "expected a list of tables such as { model = \"max\", accel = \"kvm\" }")
    out = []
    for i, item in enumerate(v):
        p = f"{path}exclude[{i}]"
        if not isinstance(item, dict) or not item:
            raise ctx.fail(p, "expected a non-empty table of case fields to globs")
        _unknown(ctx, item, set(MATCH_KEYS), p + ".")
        for k, g in item.items():
            if not isinstance(g, str):
                raise ctx.fail(f"{p}.{k}", f"expected a glob string, got {g!r}")
        out.append(tuple(sorted(item.items())))
    return tuple(out)


def _group(ctx: _Ctx, d: Any, index: int, defaults: dict) -> Group:
    path = f"group[{index}]."
    if not isinstance(d, dict):
        raise ctx.fail(f"group[{index}]", "expected a table")
    _unknown(ctx, d, GROUP_KEYS, path)
    name = d.get("name", f"group{index}")
    if not isinstance(name, str):
        raise ctx.fail(path + "name", f"expected a string, got {name!r}")
    merged = {**defaults, **d}
    default_variants = (VariantSpec(name="default"),)
    return Group(
        name=name,
        models=ctx.str_list(d, "models", path, what="CPU model name (or \"all\", \"all-versions\")"),
        variants=_variants(ctx, merged, path, default_variants),
        machines=ctx.str_list(merged, "machines", path, default=("microvm",), what="machine type"),
        accels=ctx.str_list(merged, "accels", path, default=("tcg",), allowed=ACCELS, what="accelerator"),
        guests=ctx.str_list(merged, "guests", path, default=("probe",), pattern=_GUEST,
                            what="guest (probe, linux, linux@KERNEL, ssh)"),
        qemu=ctx.str_list(merged, "qemu", path, default=("system",), what="QEMU binary (\"system\", a path or a version)"),
        hosts=ctx.str_list(merged, "hosts", path, default=("native",), pattern=_HOST,
                           what="host (native, simulate[:PROFILE[@KERNEL]], emulated:MODEL@KERNEL[,param=value...])"),
        timeout=ctx.number(merged, "timeout", path, 20.0),
        exclude=_exclude(ctx, d, path),
    )


def load_known_issues(path: Path) -> tuple[KnownIssue, ...]:
    """Read a known-issues file (``[[issue]]`` tables)."""
    where = str(path)
    data = _read_toml(path)
    ctx = _Ctx(where)
    _unknown(ctx, data, {"issue"}, "")
    items = data.get("issue", [])
    if not isinstance(items, list):
        raise ctx.fail("issue", "expected [[issue]] tables")
    out = []
    seen: set[str] = set()
    allowed = {"id", "title", "link", "layer", "features", "outcome", "modes", *MATCH_KEYS}
    for i, d in enumerate(items):
        p = f"issue[{i}]."
        if not isinstance(d, dict):
            raise ctx.fail(f"issue[{i}]", "expected a table")
        _unknown(ctx, d, allowed, p)
        for key in ("id", "title", "link"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ctx.fail(p + key, "missing (expected a non-empty string; 'link' is the bug report or commit URL)")
        if d["id"] in seen:
            raise ctx.fail(p + "id", f"duplicate id {d['id']!r}")
        seen.add(d["id"])
        layer = d.get("layer")
        if layer is not None and layer not in FINDING_CLASSES[:-1]:
            raise ctx.fail(p + "layer", f"{layer!r} is not a layer (expected one of: {', '.join(FINDING_CLASSES[:-1])})")
        outcome = d.get("outcome")
        if outcome is not None and outcome not in PROBLEM_OUTCOMES:
            raise ctx.fail(p + "outcome", f"{outcome!r} is not an outcome (expected one of: {', '.join(PROBLEM_OUTCOMES)})")
        features = ctx.str_list(d, "features", p, default=(), what="feature name or location")
        if outcome is None and not features and layer is None:
            raise ctx.fail(f"issue[{i}]", "matches everything: give 'features', 'layer' or 'outcome'")
        match = tuple((k, ctx.str_list(d, k, p, what="glob")) for k in MATCH_KEYS if k in d)
        modes = ctx.str_list(d, "modes", p, default=(), what="CPU mode")
        out.append(KnownIssue(id=d["id"], title=d["title"], link=d["link"], where=f"{where}:issue[{i}]",
                              layer=layer, features=features, outcome=outcome, match=match, modes=modes))
    return tuple(out)


def _read_toml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise MatrixError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise MatrixError(f"{path}: not UTF-8 text (byte {e.start}): not a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MatrixError(f"{path}: not valid TOML: {e}") from None


def load_matrix(path: str | Path) -> Matrix:
    p = Path(path)
    data = _read_toml(p)
    ctx = _Ctx(str(p))
    _unknown(ctx, data, {"matrix", "defaults", "group"}, "")
    head = data.get("matrix", {})
    if not isinstance(head, dict):
        raise ctx.fail("matrix", "expected a [matrix] table")
    _unknown(ctx, head, {"name", "description", "fail_on", "jobs", "known_issues"}, "matrix.")
    name = head.get("name", p.stem)
    fail_on = ctx.str_list(head, "fail_on", "matrix.", default=DEFAULT_FAIL_ON,
                           allowed=tuple(dict.fromkeys(FINDING_CLASSES + PROBLEM_OUTCOMES)), what="finding class or outcome")
    jobs = head.get("jobs", 0)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ctx.fail("matrix.jobs", f"expected a non-negative integer (0 = one per CPU), got {jobs!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ctx.fail("defaults", "expected a [defaults] table")
    _unknown(ctx, defaults, DEFAULT_KEYS, "defaults.")
    groups_raw = data.get("group")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise ctx.fail("group", "missing (expected at least one [[group]] table with 'models')")
    groups = tuple(_group(ctx, g, i, defaults) for i, g in enumerate(groups_raw))
    names = [g.name for g in groups]
    for n in names:
        if names.count(n) > 1:
            raise ctx.fail("group", f"duplicate group name {n!r}")
    files = ctx.str_list(head, "known_issues", "matrix.", default=(), what="path (relative to the matrix)")
    issue_paths = tuple((p.parent / f) for f in files)
    issues: list[KnownIssue] = []
    for f in issue_paths:
        issues.extend(load_known_issues(f))
    return Matrix(name=name, path=p, description=str(head.get("description", "")), groups=groups,
                  known_issues=tuple(issues), fail_on=fail_on, jobs=jobs, known_issue_files=issue_paths)
