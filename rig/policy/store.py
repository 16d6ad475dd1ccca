"""Finding and loading policy files; mapping a kernel version to a policy, saying when it is approximate.

Two stores, side by side:

* shipped: ``rig/policy/data`` (in the package);
* user: ``<cache>/policies`` (``$RIG_CACHE_DIR/policies``), written by
  ``rig policy get VER`` and ``rig policy import ... --store``.  A user policy
  never replaces a shipped one of the same name.

Files:

* ``linux-VER.json`` -- imported from a kernel tree by ``rig policy import``;
* ``linux-VER.overlay.json`` -- hand-written rules for that version, merged at load;
* ``linux-NAME.json`` with ``"format": "rig-kvm-policy-variant/1"`` -- a
  hand-written variant of another policy (``variant_of``), selected for kernel
  versions inside its ``range`` when no imported policy of that series exists,
  or only by name when it has no ``range`` (a what-if).

:func:`resolve_policy` is the one way from a requested kernel version or policy
name to a policy: a :class:`PolicyChoice` that says whether the policy is exact
for the request and, when not, an approximation sentence naming the policy used
and how to get the exact one.  A name that is neither a policy nor a kernel
version is an error with suggestions, never a fallback.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .model import FORMAT, Policy, PolicyError, apply_overlay, policy_from_json

VARIANT_FORMAT = "rig-kvm-policy-variant/1"


def data_dir() -> Path:
    """The shipped policies."""
    return Path(str(resources.files("rig.policy").joinpath("data")))


def user_dir() -> Path:
    """The user policy store (``rig policy get``, ``rig policy import --store``)."""
    from ..images.cache import cache_root

    return cache_root() / "policies"


_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?")
#: what may follow a version in a kernel release string (uname -r): Debian ABI numbers, flavours, build tags
_RELEASE_TAIL = re.compile(r"^(?:[-+.~_](?:\d+|deb\d*|bpo\d*|cloud|amd64|arm64|generic|rt|pae|686|i386|x86_64|el\d+\w*|"
                           r"fc\d+|lts|virt|default|azure|aws|gcp|kvm|unsigned|dirty|custom|local|g[0-9a-f]{6,}|"
                           r"[a-z]?\d+[a-z0-9_]*))*$", re.I)


def version_key(text: str) -> tuple[int, ...]:
    """(major, minor, patch, rc) ordering; ``7.0-rc2`` < ``7.0``."""
    m = _VERSION.match(text.strip())
    if not m:
        raise PolicyError(f"kernel version {text!r} not understood (expected e.g. 6.12, 6.12.57, 7.0-rc2)")
    major, minor, patch, rc = m.groups()
    return (int(major), int(minor), int(patch or 0), int(rc) if rc else 10_000)


def series_of(text: str) -> str:
    k = version_key(text)
    return f"{k[0]}.{k[1]}"


@dataclass(frozen=True)
class Entry:
    name: str  # "6.12", "6.16", "7.3-tsa-prefix"
    path: Path
    kind: str  # "imported" or "variant"
    key: tuple[int, ...]
    range: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    description: str = ""
    store: str = "shipped"  # or "user"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise PolicyError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise PolicyError(f"{path}: not JSON: {e.msg} at line {e.lineno}") from None


def _entries_in(d: Path, store: str) -> list[Entry]:
    out = []
    for p in sorted(d.glob("linux-*.json")) if d.is_dir() else []:
        if p.name.endswith(".overlay.json"):
            continue
        data = _read(p)
        name = p.name.removeprefix("linux-").removesuffix(".json")
        if data.get("format") == VARIANT_FORMAT:
            rng = data.get("range")
            key = version_key(rng[0] if rng else data["variant_of"])
            out.append(Entry(name, p, "variant", key, (version_key(rng[0]), version_key(rng[1])) if rng else None,
                             data.get("description", ""), store))
        elif data.get("format") == FORMAT:
            src = data.get("source", {})
            pkg = src.get("package", "?")
            pkg = f"Debian source package {pkg}" if pkg == "linux" else pkg
            out.append(Entry(name, p, "imported", version_key(name),
                             description=f"imported from {pkg} {src.get('package_version', '')}".strip(), store=store))
    return out


def entries() -> list[Entry]:
    shipped = _entries_in(data_dir(), "shipped")
    names = {e.name for e in shipped}
    user = [e for e in _entries_in(user_dir(), "user") if e.name not in names]
    return sorted(shipped + user, key=lambda e: (e.key, e.kind, e.name))


@dataclass(frozen=True)
class PolicyChoice:
    """The policy chosen for a request, and whether it is exact for it."""

    policy: Policy
    entry: Entry
    requested: str
    exact: bool
    #: one sentence when not exact: what was used instead, and how to get the exact policy
    approximation: str | None = None

    @property
    def why(self) -> str:
        """The selection in a few words, for headers (``policy linux-6.12 for kernel 6.12.57``)."""
        if self.requested == self.entry.name and self.exact:
            return f"policy linux-{self.entry.name} (exact name)"
        base = f"policy linux-{self.entry.name} for kernel {self.requested}"
        return f"{base} -- APPROXIMATE: {self.approximation}" if self.approximation else base


def get_hint(version: str) -> str:
    """How to get the exact policy for a kernel version."""
    s = series_of(version)
    return (f"get the exact one with `rig policy get {s}` (imports Debian's source of {s} into the user policy store, "
            f"when Debian has one) or `rig policy import KERNEL_TREE --rev v{s} --store` from a kernel git clone")


def _parse_request(text: str, all_entries: list[Entry]) -> tuple[int, ...]:
    """A kernel version or release (``uname -r``: any local suffix), unless it looks like a mistyped policy name."""
    t = text.strip()
    m = _VERSION.match(t)
    tail = t[m.end():] if m else t
    names = [e.name for e in all_entries]
    close = [n for n in names if n.startswith(t) and tail] or difflib.get_close_matches(t, names, n=3, cutoff=0.6)
    starts = any(n.startswith(t) for n in names) and bool(tail)  # "7.3-tsa": the start of a policy name
    if m and not starts and (_RELEASE_TAIL.match(tail) or not difflib.get_close_matches(t, names, n=1, cutoff=0.8)):
        return version_key(t)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            f"policies: {', '.join(names)}; or a kernel version such as 6.12 or 6.12.57-cloud-amd64")
    raise PolicyError(f"{text!r} is neither a policy name nor a kernel version", hint=hint)


def select(version: str) -> tuple[Entry, str]:
    """Pick the policy for ``version``; returns (entry, explanation). See :func:`resolve_policy`."""
    e, exact, approx = _select(version)
    why = (f"policy linux-{e.name} (exact name)" if e.name == version.strip() and exact else
           f"policy linux-{e.name} for kernel {version}" + ("" if exact else f" -- APPROXIMATE: {approx}"))
    return e, why


def _select(version: str) -> tuple[Entry, bool, str | None]:
    all_entries = entries()
    req = version.strip()
    for e in all_entries:
        if e.name == req and not (e.kind == "variant" and e.range):  # a stand-in named by its version is still one
            return e, True, None
    key = _parse_request(req, all_entries)
    s = f"{key[0]}.{key[1]}"
    for e in all_entries:
        if e.kind == "imported" and e.key[:2] == key[:2]:
            return e, True, None
    for e in all_entries:
        if e.kind == "variant" and e.range and e.range[0] <= key <= e.range[1]:
            return e, False, (f"no imported policy for kernel {s}; using linux-{e.name}, {e.description.rstrip('.')}. "
                              f"{get_hint(req)[0].upper()}{get_hint(req)[1:]}")
    best = None
    for e in all_entries:
        if e.kind == "imported" and e.key[:2] <= key[:2]:
            best = e
    if best is None:
        names = ", ".join(e.name for e in all_entries)
        raise PolicyError(f"no policy at or below kernel {req} (have {names})", hint=get_hint(req))
    return best, False, (f"no policy for kernel {s}; using linux-{best.name} ({best.description}), the nearest not "
                         f"newer: rules that changed after {best.name} are not modelled. "
                         f"{get_hint(req)[0].upper()}{get_hint(req)[1:]}")


def resolve_policy(version: str) -> PolicyChoice:
    """The policy for a kernel version or policy name, with its exactness (see the module docstring)."""
    e, exact, approx = _select(version)
    return PolicyChoice(_load_entry(e.name, str(e.path)), e, version.strip(), exact, approx)


@lru_cache(maxsize=32)
def _load_entry(name: str, path: str) -> Policy:
    p = Path(path)
    d = _read(p)
    if d.get("format") == VARIANT_FORMAT:
        base = load_policy(d["variant_of"])
        pol = policy_from_json(_base_json(base, d["variant_of"]), str(p))
        pol.variables = dict(base.variables)
        pol.expressions = dict(base.expressions)
        pol.notes = list(base.notes)
        pol.version = name
        for k, v in d.get("set", {}).items():
            if k not in ("synthesized", "leaves"):
                raise PolicyError(f"{p}: variant may only set 'synthesized' or 'leaves', not {k!r}")
            if k == "synthesized":
                pol.synthesized = v
            else:
                pol.leaves.update(v)
        pol.hand_written = True
        pol.variant_of = d["variant_of"]
        pol.description = d.get("description", "")
        pol.commits = dict(d.get("commits", {}))
        pol.notes.extend(d.get("notes", []))
        return pol
    pol = policy_from_json(d, str(p))
    apply_overlays(pol, p)
    return pol


def apply_overlays(pol: Policy, path: Path) -> None:
    """The shared overlay (``linux.overlay.json``, shipped), then the version's own (``linux-VER.overlay.json``)."""
    own = path.name.removesuffix(".json") + ".overlay.json"
    for ov in (data_dir() / "linux.overlay.json", path.with_name(own)):
        if ov.exists():
            apply_overlay(pol, _read(ov), str(ov))


def _base_json(base: Policy, name: str) -> dict[str, Any]:
    e = {x.name: x for x in entries()}.get(name)
    if e is None:
        raise PolicyError(f"variant refers to unknown policy linux-{name}", hint="rig policy list shows the policies")
    return _read(e.path)


def load_policy(version: str) -> Policy:
    """The policy for a kernel version (``6.12``, ``6.12.57``, ``7.3``, ``6.16-tsa-prefix``)."""
    e, _why = select(version)
    return _load_entry(e.name, str(e.path))


def load_file(path: str | Path) -> Policy:
    p = Path(path)
    d = _read(p)
    if d.get("format") != FORMAT:
        raise PolicyError(f"{p}: not a KVM policy file")
    return policy_from_json(d, str(p))
