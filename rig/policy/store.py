"""Finding and loading policy files; mapping a kernel version to the nearest one.

Files in ``rig/policy/data`` (or ``$RIG_POLICY_DIR`` when set):

* ``linux-VER.json`` -- imported from a kernel tree by ``rig policy import``;
* ``linux-VER.overlay.json`` -- hand-written rules for that version, merged at load;
* ``linux-NAME.json`` with ``"format": "rig-kvm-policy-variant/1"`` -- a
  hand-written variant of another policy (``variant_of``), selected for kernel
  versions inside its ``range`` only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .model import FORMAT, Policy, PolicyError, apply_overlay, policy_from_json, validate

VARIANT_FORMAT = "rig-kvm-policy-variant/1"


def data_dir() -> Path:
    env = os.environ.get("RIG_POLICY_DIR")
    if env:
        return Path(env)
    return Path(str(resources.files("rig.policy").joinpath("data")))


def version_key(text: str, where: Path | None = None) -> tuple[int, ...]:
    """(major, minor, patch, rc) ordering; ``7.0-rc2`` < ``7.0``."""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?", text.strip(), re.ASCII)
    if not m:
        raise PolicyError(f"{where}: " * (where is not None)
                          + f"kernel version {text!r} not understood (expected e.g. 6.12, 6.12.57, 7.0-rc2)")
    major, minor, patch, rc = m.groups()
    return (int(major), int(minor), int(patch or 0), int(rc) if rc else 10_000)


@dataclass(frozen=True)
class Entry:
    name: str  # "6.12", "6.16-tsa-prefix"
    path: Path
    kind: str  # "imported" or "variant"
    key: tuple[int, ...]
    range: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    description: str = ""


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise PolicyError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise PolicyError(f"{path}: not UTF-8 text (byte {e.start}): not a policy file") from None
    except json.JSONDecodeError as e:
        raise PolicyError(f"{path}: not JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: not a policy file (top level is not an object)")
    return data


def entries() -> list[Entry]:
    out = []
    for p in sorted(data_dir().glob("linux-*.json")):
        if p.name.endswith(".overlay.json"):
            continue
        d = _read(p)
        name = p.name.removeprefix("linux-").removesuffix(".json")
        if d.get("format") == VARIANT_FORMAT:
            rng, desc = d.get("range"), d.get("description", "")
            if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, str) for x in rng)):
                raise PolicyError(f"{p}: variant 'range' must be [FIRST, LAST] kernel versions, got {rng!r:.60}")
            if not isinstance(desc, str) or not isinstance(d.get("variant_of"), str):
                raise PolicyError(f"{p}: variant needs 'variant_of' (a policy name) and a 'description' string")
            lo, hi = rng
            out.append(Entry(name, p, "variant", version_key(lo, p), (version_key(lo, p), version_key(hi, p)), desc))
        elif d.get("format") == FORMAT:
            src = d.get("source") if isinstance(d.get("source"), dict) else {}
            out.append(Entry(name, p, "imported", version_key(name, p),
                             description=f"imported from {src.get('package', '?')} {src.get('package_version', '')}".strip()))
    return sorted(out, key=lambda e: (e.key, e.kind))


def select(version: str) -> tuple[Entry, str]:
    """Pick the policy for ``version``; returns (entry, explanation)."""
    all_entries = entries()
    for e in all_entries:
        if e.name == version:
            return e, f"policy linux-{e.name} (exact name)"
    key = version_key(version)
    for e in all_entries:
        if e.kind == "variant" and e.range and e.range[0] <= key <= e.range[1]:
            return e, f"policy linux-{e.name} for kernel {version} (hand-written variant covering this range)"
    best = None
    for e in all_entries:
        if e.kind == "imported" and e.key[:2] <= key[:2]:
            best = e
    if best is None:
        names = ", ".join(e.name for e in all_entries)
        raise PolicyError(f"no policy at or below kernel {version} (have {names})")
    exact = best.key[:2] == key[:2]
    return best, (f"policy linux-{best.name} for kernel {version}" if exact else
                  f"policy linux-{best.name} for kernel {version} (nearest not newer; no policy for "
                  f"{key[0]}.{key[1]})")


@lru_cache(maxsize=32)
def _load_entry(name: str, path: str) -> Policy:
    p = Path(path)
    d = _read(p)
    if d.get("format") == VARIANT_FORMAT:
        base_entry = {x.name: x for x in entries()}.get(d["variant_of"])
        if base_entry is None or base_entry.kind != "imported":  # a variant of a variant could loop
            raise PolicyError(f"{p}: variant_of {d['variant_of']!r} does not name an imported policy",
                              hint="see `rig policy list`")
        base = _load_entry(base_entry.name, str(base_entry.path))
        pol = policy_from_json(_base_json(base, d["variant_of"]), str(p))
        pol.variables = dict(base.variables)
        pol.expressions = dict(base.expressions)
        pol.notes = list(base.notes)
        pol.version = name
        changes = d.get("set", {})
        if not isinstance(changes, dict):
            raise PolicyError(f"{p}: variant 'set' must be an object")
        for k, v in changes.items():
            if k not in ("synthesized", "leaves"):
                raise PolicyError(f"{p}: variant may only set 'synthesized' or 'leaves', not {k!r}")
            if k == "synthesized":
                pol.synthesized = v
            elif isinstance(v, dict):
                pol.leaves.update(v)
            else:
                raise PolicyError(f"{p}: variant set.leaves must be an object")
        pol.hand_written = True
        pol.variant_of = d["variant_of"]
        pol.description = d.get("description", "")
        try:
            pol.commits = {str(k): str(v) for k, v in d.get("commits", {}).items()}
            pol.notes.extend(d.get("notes", []))
        except (TypeError, AttributeError, ValueError) as e:
            raise PolicyError(f"{p}: malformed variant: {e}") from None
        validate(pol, str(p))
        return pol
    pol = policy_from_json(d, str(p))
    apply_overlays(pol, p)
    return pol


def apply_overlays(pol: Policy, path: Path) -> None:
    """The shared overlay (``linux.overlay.json``), then the version's own (``linux-VER.overlay.json``)."""
    for ov in (path.with_name("linux.overlay.json"), path.with_name(path.name.removesuffix(".json") + ".overlay.json")):
        if ov.exists():
            apply_overlay(pol, _read(ov), str(ov))


def _base_json(base: Policy, name: str) -> dict[str, Any]:
    e = {x.name: x for x in entries()}.get(name)
    if e is None:
        raise PolicyError(f"variant refers to unknown policy linux-{name}")
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
