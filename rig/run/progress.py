"""Progress of a run on stderr: a bar redrawn in place on a terminal, a line now and then elsewhere.

Every case that fails (or errs) is printed on its own line as it finishes, so a
CI log shows the failures without waiting for the report.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from .result import CaseResult

BAR = 24


class Progress:
    def __init__(self, total: int, *, done: int = 0, stream: TextIO | None = None, tty: bool | None = None,
                 every_s: float = 5.0) -> None:
        self.total = total
        self.done = done
        self.skipped = done  # finished in an earlier (resumed) run
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.verdicts: Counter = Counter()
        self.t0 = time.monotonic()
        self._last = 0.0
        self.every_s = every_s

    def rate(self) -> float:
        ran = self.done - self.skipped
        dt = time.monotonic() - self.t0
        return ran / dt * 60 if dt > 0 and ran else 0.0

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * BAR)
        counts = " ".join(f"{v} {self.verdicts[v]}" for v in ("pass", "approximate", "expected", "fail", "error") if self.verdicts[v])
        rate = self.rate()
        left = self.total - self.done
        eta = f" ETA {left / rate * 60:.0f}s" if rate and left else ""
        return f"[{'#' * filled}{'.' * (BAR - filled)}] {self.done}/{self.total} {counts} {rate:.0f} cases/min{eta}"

    def __call__(self, r: CaseResult) -> None:
        self.done += 1
        self.verdicts[r.verdict] += 1
        if r.verdict in ("fail", "error"):
            self._clear()
            first = r.unexpected[0] if r.unexpected else r.message
            more = f" (+{len(r.unexpected) - 1} more)" if len(r.unexpected) > 1 else ""
            self.stream.write(f"{r.verdict.upper()} {r.id}: {first}{more}\n")
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        elif now - self._last >= self.every_s or self.done == self.total:
            self.stream.write(self.line() + "\n")
            self._last = now
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
