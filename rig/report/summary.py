"""Counting results: by verdict, outcome and finding class (shared by every report)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..run.result import CaseResult


@dataclass
class Summary:
    total: int = 0
    verdicts: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    duration_s: float = 0.0

    @property
    def unexpected(self) -> int:
        return self.verdicts["fail"] + self.verdicts["error"]

    def line(self) -> str:
        parts = [f"{self.total} cases"] + [f"{self.verdicts[v]} {v}" for v in ("pass", "approximate", "expected", "fail", "error") if self.verdicts[v]]
        if self.classes:
            parts.append("findings: " + ", ".join(f"{n} {c}" for c, n in sorted(self.classes.items())))
        return "; ".join(parts)


def summarise(results: Sequence[CaseResult]) -> Summary:
    s = Summary(total=len(results))
    for r in results:
        s.verdicts[r.verdict] += 1
        s.outcomes[r.outcome] += 1
        s.duration_s += r.duration_s
        for f in r.findings:
            s.classes[f.cls] += 1
    return s
