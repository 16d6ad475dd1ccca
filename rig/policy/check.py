"""``rig policy check``: the model's prediction against a measured KVM_GET_SUPPORTED_CPUID.

Every differing bit is listed by feature name and KVM word.  Differences the
rig cannot model are documented in ``data/known-differences.json`` (each with
the kernel source it comes from); they are shown as *known*.  The CLI exits 0
only on full agreement, or with ``--allow-known`` when every difference is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..host.profile import HostProfile
from .explain import _LOC
from .model import Policy, PolicyError
from .predict import Difference, Prediction, compare_supported, predict_supported
from .store import version_key

KNOWN_FORMAT = "rig-kvm-known-differences/1"


@dataclass(frozen=True)
class Known:
    id: str
    feature: str | None
    location: str | None
    kernels: tuple[str, ...]  # series ("6.1"); empty = any
    sources: tuple[str, ...]  # profile sources ("emulated", "capture"); empty = any
    reason: str
    src: str

    def matches(self, d: Difference, policy: Policy, profile: HostProfile) -> bool:
        if self.kernels and not any(version_key(k)[:2] == version_key(policy.version.split("-")[0])[:2]
                                    for k in self.kernels):
            return False
        if self.sources and not any(profile.source.startswith(s) for s in self.sources):
            return False
        if self.feature is not None:
            return d.feature == self.feature
        if self.location is not None:
            m = _LOC.match(self.location)
            if not m:
                return False
            return (d.location.leaf, d.location.subleaf, d.location.reg, d.location.bit) == (
                int(m.group(1), 0), int(m.group(2) or "0", 0), m.group(3).lower(), int(m.group(4)))
        return False


@cache
def _known_json() -> dict[str, Any]:
    return json.loads(resources.files("rig.policy").joinpath("data/known-differences.json").read_text())


def known_differences(data: dict[str, Any] | None = None) -> list[Known]:
    d = data if data is not None else _known_json()
    if not isinstance(d, dict) or d.get("format") != KNOWN_FORMAT:
        fmt = d.get("format") if isinstance(d, dict) else None
        raise PolicyError(f"known-differences: format {fmt!r}, expected {KNOWN_FORMAT!r}")
    rows = d.get("entries", [])
    if not isinstance(rows, list):
        raise PolicyError("known-differences: 'entries' must be a list")
    out = []
    for i, e in enumerate(rows):
        where = f"known-differences: entries[{i}]"
        if not isinstance(e, dict):
            raise PolicyError(f"{where}: not an object")
        for key in ("id", "reason", "src"):
            if not isinstance(e.get(key), str):
                raise PolicyError(f"{where}: {key!r} must be a string")
        for key in ("feature", "location"):
            if not isinstance(e.get(key), str | None):
                raise PolicyError(f"{where}: {key!r} must be a string")
        lists = {key: e.get(key, []) for key in ("kernels", "sources")}
        for key, v in lists.items():
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise PolicyError(f"{where}: {key!r} must be a list of strings")
        out.append(Known(e["id"], e.get("feature"), e.get("location"), tuple(lists["kernels"]),
                         tuple(lists["sources"]), e["reason"], e["src"]))
    return out


@dataclass
class CheckResult:
    prediction: Prediction
    differences: list[Difference]
    known: list[tuple[Difference, Known]]

    @property
    def unexplained(self) -> list[Difference]:
        k = {id(d) for d, _ in self.known}
        return [d for d in self.differences if id(d) not in k]

    def ok(self, strict: bool = False) -> bool:
        return not self.differences if strict else not self.unexplained


def check(profile: HostProfile, policy: Policy, params: dict[str, str] | None = None,
          known: list[Known] | None = None) -> CheckResult:
    if profile.kvm.supported is None:
        raise PolicyError(f"profile {profile.name or '?'} has no measured KVM_GET_SUPPORTED_CPUID "
                          f"({profile.kvm.error or 'not recorded'})", hint="capture it on a KVM host with `rig host capture`")
    pred = predict_supported(profile, policy, params)
    diffs = compare_supported(pred.table, profile.kvm.supported, policy)
    kn = known if known is not None else known_differences()
    matched = []
    for d in diffs:
        for k in kn:
            if k.matches(d, policy, profile):
                matched.append((d, k))
                break
    return CheckResult(pred, diffs, matched)


def render(res: CheckResult, selection: str, strict: bool = False) -> str:
    p = res.prediction.policy
    lines = [f"check: {selection}"]
    if not res.differences:
        lines.append("  full agreement: predicted KVM_GET_SUPPORTED_CPUID equals the measured one")
        return "\n".join(lines)
    kmap = {id(d): k for d, k in res.known}
    un = res.unexplained
    lines.append(f"  {len(res.differences)} differing bit(s): {len(un)} unexplained, {len(res.known)} known")
    for d in res.differences:
        k = kmap.get(id(d))
        tag = f"known [{k.id}]" if k else "DIFFERS"
        name = d.feature or "(unnamed bit)"
        word = f" word {d.word}" if d.word else ""
        lines.append(f"  {tag:<10} {name} {d.location}{word}: predicted {d.predicted}, measured {d.measured}")
        if k:
            lines.append(f"             {k.reason} ({k.src})")
    for n in res.prediction.notes:
        lines.append(f"  note: {n}")
    verdict = "agreement apart from known differences" if res.ok(False) else "disagreement"
    if strict and res.known and res.ok(False):
        verdict = "disagreement (only known differences; --allow-known accepts them)"
    lines.append(f"  result: {verdict} ({p.label})")
    return "\n".join(lines)
