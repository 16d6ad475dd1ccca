"""Matching findings and outcomes against known issues (expected findings declared in data)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from ..matrix.model import KnownIssue
from ..results import Case


def case_fields(case: Case, qemu_version: str | None = None) -> dict[str, str]:
    return {
        "model": case.model, "variant": case.variant, "machine": case.machine, "accel": case.accel,
        "guest": case.guest, "host": case.host, "qemu": case.qemu, "qemu_version": qemu_version or "",
        "case": case.id,
    }


def _case_matches(issue: KnownIssue, fields: dict[str, str]) -> bool:
    return all(any(fnmatch.fnmatchcase(fields.get(k, ""), g) for g in globs) for k, globs in issue.match)


def match_finding(issues: Iterable[KnownIssue], fields: dict[str, str], *, name: str, location: str, layer: str,
                  modes: Iterable[str] = ()) -> KnownIssue | None:
    """The first issue that covers a bit finding (feature name or location, layer, modes, case fields)."""
    modes = set(modes)
    for issue in issues:
        if issue.outcome is not None:
            continue
        if issue.layer is not None and issue.layer != layer:
            continue
        if issue.features and not any(f.lower() in (name.lower(), location.lower()) for f in issue.features):
            continue
        if issue.modes and modes and not modes & set(issue.modes):
            continue
        if _case_matches(issue, fields):
            return issue
    return None


def match_outcome(issues: Iterable[KnownIssue], fields: dict[str, str], outcome: str) -> KnownIssue | None:
    for issue in issues:
        if issue.outcome == outcome and _case_matches(issue, fields):
            return issue
    return None
