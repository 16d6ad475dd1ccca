"""Matrix value types: a :class:`Matrix` (what the TOML says) and the :class:`Case` values it expands to.

A case is one QEMU boot: (host, QEMU binary, accelerator, machine, CPU model,
flags, guest).  Its :attr:`Case.id` is readable *and* stable: the readable part
names the model, variant, machine and accelerator; a short hash of every field
that influences the result makes it unique, so ``-k`` filtering, ``--resume``
and the history database can key on it across runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ACCELS: tuple[str, ...] = ("tcg", "kvm")
GUESTS: tuple[str, ...] = ("probe", "linux", "ssh")
#: finding classes (see rig.compare.classify); also the vocabulary of ``fail_on``
FINDING_CLASSES: tuple[str, ...] = (
    "model-gap", "qemu-behaviour", "kvm-behaviour", "host-quirk", "known-bug",
)
#: case outcomes that are results, not rig failures (see rig.qemu.launcher)
OUTCOMES: tuple[str, ...] = ("ok", "simulated", "probe-failed", "qemu-aborted", "timeout", "qemu-error", "qmp-error", "rig-error")
#: outcomes that are not complete results (each is a class of its own; "rig-error" is the rig's fault)
PROBLEM_OUTCOMES: tuple[str, ...] = OUTCOMES[2:]
DEFAULT_FAIL_ON: tuple[str, ...] = (
    "model-gap", "qemu-behaviour", "kvm-behaviour",
    "probe-failed", "qemu-aborted", "timeout", "qemu-error", "qmp-error", "rig-error",
)

_SAFE = re.compile(r"[^A-Za-z0-9_.+=-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "_"


@dataclass(frozen=True)
class Variant:
    """A named set of ``-cpu`` flags (``+f``, ``-f``, ``f=on``, ``f=off``)."""

    name: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    host: str           # "native", "simulate", "emulated:MODEL@KERNEL"
    qemu: str           # "system" (qemu-system-x86_64 on PATH), a path, or a version such as "10.0"
    accel: str          # "tcg" | "kvm"
    machine: str        # "microvm", "q35", "pc", ...
    model: str          # QEMU CPU model name
    variant: str = "default"
    flags: tuple[str, ...] = ()
    guest: str = "probe"
    timeout: float = 20.0
    group: str = ""

    @property
    def cpu_arg(self) -> str:
        """The ``-cpu`` argument."""
        return ",".join((self.model, *self.flags))

    def identity(self) -> dict:
        """Every field that influences the result (``timeout`` and ``group`` do not)."""
        return {
            "host": self.host, "qemu": self.qemu, "accel": self.accel, "machine": self.machine,
            "model": self.model, "flags": list(self.flags), "guest": self.guest,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    @property
    def id(self) -> str:
        parts = [self.model, self.variant, self.machine, self.accel]
        if self.guest != "probe":
            parts.append(self.guest)
        if self.host != "native":
            parts.append(self.host.replace(":", "-"))
        if self.qemu != "system":
            parts.append("qemu" + Path(self.qemu).name if "/" in self.qemu else "qemu" + self.qemu)
        return "-".join(_slug(p) for p in parts) + "-" + self.digest

    def to_json(self) -> dict:
        d = self.identity()
        d.update(id=self.id, variant=self.variant, timeout=self.timeout, group=self.group, cpu=self.cpu_arg)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Case:
        return cls(
            host=d["host"], qemu=d["qemu"], accel=d["accel"], machine=d["machine"], model=d["model"],
            variant=d.get("variant", "default"), flags=tuple(d.get("flags", ())), guest=d.get("guest", "probe"),
            timeout=float(d.get("timeout", 20.0)), group=d.get("group", ""),
        )


@dataclass(frozen=True)
class VariantSpec:
    """One entry of a group's ``variants``: explicit flags or a generator."""

    name: str | None = None
    flags: tuple[str, ...] = ()
    #: None, "model-features-off" or "catalogue-features-on"
    generate: str | None = None
    #: generators only: features to leave out (QEMU names)
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """One cross product: models x variants x machines x accels x guests x qemu x hosts."""

    name: str
    models: tuple[str, ...]
    variants: tuple[VariantSpec, ...]
    machines: tuple[str, ...]
    accels: tuple[str, ...]
    guests: tuple[str, ...]
    qemu: tuple[str, ...]
    hosts: tuple[str, ...]
    timeout: float
    #: (key, glob) pairs; a case matching every pair of one entry is dropped
    exclude: tuple[tuple[tuple[str, str], ...], ...] = ()


@dataclass(frozen=True)
class KnownIssue:
    """An expected finding: matches findings by feature/location, layer and case fields (globs)."""

    id: str
    title: str
    link: str
    where: str                       # file:index, for messages
    layer: str | None = None         # a FINDING_CLASSES entry other than known-bug, or None = any
    features: tuple[str, ...] = ()   # feature names or locations ("0x7.0.EBX[23]"); empty = any bit
    outcome: str | None = None       # match a case outcome (e.g. "timeout") instead of bits
    match: tuple[tuple[str, tuple[str, ...]], ...] = ()  # case field -> globs
    modes: tuple[str, ...] = ()      # guest CPU modes; empty = any


@dataclass(frozen=True)
class Matrix:
    name: str
    path: Path
    description: str
    groups: tuple[Group, ...]
    known_issues: tuple[KnownIssue, ...] = ()
    fail_on: tuple[str, ...] = DEFAULT_FAIL_ON
    jobs: int = 0
    known_issue_files: tuple[Path, ...] = field(default=())
