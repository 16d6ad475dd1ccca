"""What a matrix needs to know about a QEMU binary: its CPU models and each model's features.

Asked once per binary with one short-lived ``qemu -M none -qmp stdio`` process
(``query-cpu-definitions`` and a static ``query-cpu-model-expansion`` per
model) and cached under ``<cache>/qemu-models/`` keyed by the binary's path,
size and mtime, so expanding the nightly matrix costs one QEMU start per binary.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from ..images.cache import cache_root, digest
from ..qemu.binaries import QemuBinary, find_qemu

CACHE_FORMAT = "rig-qemu-models/2"
#: models that are not real CPU models (``base`` is the static-expansion base; ``host`` needs KVM)
PSEUDO_MODELS = frozenset({"base", "host"})


class QemuInfoError(RigError):
    pass


@dataclass(frozen=True)
class ModelDef:
    name: str
    #: "alias of X" target or None; unversioned names report their default version here
    alias_of: str | None
    #: versioned name (``-vN``)
    versioned: bool
    #: QEMU feature names the model enables (static expansion, TCG)
    features: tuple[str, ...]


def resolve_qemu(spec: str) -> QemuBinary:
    """A matrix ``qemu`` entry -> the binary: "system" = qemu-system-x86_64 on PATH, else a path
    or a version (the system binary when it matches, else a build fetched by rig.images.qemu)."""
    return find_qemu(spec)


def _cache_file(binary: QemuBinary) -> Path:
    key = digest([binary.stat_key(), CACHE_FORMAT])
    return cache_root() / "qemu-models" / f"{key}.json"


def _query(binary: QemuBinary) -> dict:
    cmds = [{"execute": "qmp_capabilities"}, {"execute": "query-version"}, {"execute": "query-cpu-definitions"},
            # every x86 CPU type has the same properties (features, level, vendor, hv-*, ...): ask one
            {"execute": "device-list-properties", "arguments": {"typename": "qemu64-x86_64-cpu"}}]
    # first pass: definitions; second pass: expansions (we need the names first)
    out = _qmp_batch(binary, cmds)
    version = out[1]["qemu"]
    defs = out[2]
    props = sorted(p["name"] for p in out[3]) if isinstance(out[3], list) else []
    names = [d["name"] for d in defs if d["name"] not in PSEUDO_MODELS]
    exp_cmds = [{"execute": "qmp_capabilities"}] + [
        {"execute": "query-cpu-model-expansion", "arguments": {"type": "static", "model": {"name": n}}} for n in names
    ]
    exps = _qmp_batch(binary, exp_cmds)[1:]
    models = {}
    for d, n, e in zip((d for d in defs if d["name"] not in PSEUDO_MODELS), names, exps, strict=True):
        props = e["model"]["props"] if isinstance(e, dict) and "model" in e else {}
        models[n] = {
            "alias_of": d.get("alias-of"),
            "features": sorted(k for k, v in props.items() if v is True),
        }
    return {"format": CACHE_FORMAT, "binary": str(binary.path),
            "version": f"{version['major']}.{version['minor']}.{version['micro']}", "models": models,
            "cpu_properties": props}


def _qmp_batch(binary: QemuBinary, cmds: list[dict]) -> list:
    """Send ``cmds`` to ``qemu -M none -qmp stdio`` and return each command's ``return`` (or error dict)."""
    text = "".join(json.dumps(c) + "\n" for c in cmds) + json.dumps({"execute": "quit"}) + "\n"
    argv = [*binary.base_argv(), "-M", "none", "-accel", "tcg", "-nodefaults", "-display", "none", "-qmp", "stdio"]
    try:
        proc = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise QemuInfoError(f"{binary.path}: cannot query CPU models: {e}") from None
    replies = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "return" in msg:
            replies.append(msg["return"])
        elif "error" in msg:
            replies.append({"error": msg["error"]})
    if len(replies) < len(cmds):
        raise QemuInfoError(f"{binary.path}: QMP answered {len(replies)} of {len(cmds)} queries: {proc.stderr.strip()[:200]}")
    return replies[: len(cmds)]


class QemuModels:
    """CPU models of one QEMU binary (cached)."""

    def __init__(self, binary: QemuBinary, data: dict) -> None:
        self.binary = binary
        self.version: str = data["version"]
        self._models: dict[str, ModelDef] = {
            n: ModelDef(n, m.get("alias_of"), _is_versioned(n), tuple(m["features"])) for n, m in data["models"].items()
        }
        #: every property a ``-cpu`` option may name (``device-list-properties``); empty when unknown
        self.cpu_properties: frozenset[str] = frozenset(data.get("cpu_properties", ()))

    @classmethod
    def for_binary(cls, binary: QemuBinary) -> QemuModels:
        cf = _cache_file(binary)
        if cf.exists():
            try:
                data = json.loads(cf.read_text())
                if data.get("format") == CACHE_FORMAT:
                    return cls(binary, data)
            except (OSError, json.JSONDecodeError):
                pass  # rebuilt below
        data = _query(binary)
        cf.parent.mkdir(parents=True, exist_ok=True)
        tmp = cf.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(cf)
        return cls(binary, data)

    def names(self) -> list[str]:
        return sorted(self._models, key=str.lower)

    def all_models(self, *, versions: bool) -> list[str]:
        """``all``: every unversioned model name that is not an alias of a versioned one
        (``Broadwell`` but not ``Broadwell-IBRS``); ``all-versions``: every ``-vN`` name."""
        out = []
        for n, m in self._models.items():
            if versions:
                if m.versioned:
                    out.append(n)
            elif not m.versioned and not (m.alias_of and _is_versioned(m.alias_of) and _base(m.alias_of) != n):
                out.append(n)
        return sorted(out, key=str.lower)

    def has(self, name: str) -> bool:
        return name in self._models or name in PSEUDO_MODELS

    def features(self, name: str) -> tuple[str, ...]:
        m = self._models.get(name)
        return m.features if m else ()


def _is_versioned(name: str) -> bool:
    head, _, tail = name.rpartition("-v")
    return bool(head) and tail.isdigit()


def _base(name: str) -> str:
    return name.rpartition("-v")[0] if _is_versioned(name) else name
