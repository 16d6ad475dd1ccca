"""Matrix value types: a :class:`Matrix` (what the TOML says); it expands to :class:`rig.results.Case` values.

A case is one QEMU boot: (host, QEMU binary, accelerator, machine, CPU model,
flags, guest).  Its :attr:`Case.id` is readable *and* stable: the readable part
names the model, variant, machine and accelerator; a short hash of every field
that influences the result makes it unique, so ``-k`` filtering, ``--resume``
and the history database can key on it across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..caseaxes import GuestKind
from ..results import DEFAULT_FAIL_ON, FindingClass, Outcome
from ..results import PROBLEM_OUTCOMES as _PROBLEM_OUTCOMES

__all__ = ["ACCELS", "DEFAULT_FAIL_ON", "FINDING_CLASSES", "GUESTS", "Group", "KnownIssue", "Matrix", "OUTCOMES",
           "PROBLEM_OUTCOMES", "Variant", "VariantSpec"]

ACCELS: tuple[str, ...] = ("tcg", "kvm")
GUESTS: tuple[str, ...] = tuple(k.value for k in GuestKind)
#: finding classes (see rig.compare.threeway); also the vocabulary of ``fail_on``
FINDING_CLASSES: tuple[str, ...] = tuple(c.value for c in FindingClass)
#: case outcomes (rig.results.Outcome)
OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
#: outcomes that are not complete results (each is a class of its own; "rig-error" is the rig's fault)
PROBLEM_OUTCOMES: tuple[str, ...] = tuple(o.value for o in _PROBLEM_OUTCOMES)


@dataclass(frozen=True)
class Variant:
    """A named set of ``-cpu`` flags (``+f``, ``-f``, ``f=on``, ``f=off``)."""

    name: str
    flags: tuple[str, ...] = ()


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
