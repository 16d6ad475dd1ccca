"""Benchmark: evaluating a whole host profile under each policy (target: < 50 ms).

Prints, per policy and profile, the median/min time of predict_supported()
(kernel caps, capability words, every leaf of KVM_GET_SUPPORTED_CPUID with
trace) and of a full check against the measured table.  Run:
``python3 bench/bench_policy.py [N]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from rig.host.profile import HostProfile
from rig.policy import compare_supported, load_policy, predict_supported

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "tests" / "unit" / "data" / "policy" / "oracle-profiles"
TARGET_MS = 50.0


def timed(fn, n: int) -> tuple[float, float]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts), min(ts)


def main(n: int = 30) -> int:
    worst = 0.0
    t0 = time.perf_counter()
    pols = {v: load_policy(v) for v in ("6.1", "6.12", "7.3", "7.3-tsa-prefix")}
    print(f"load 4 policies (cold, JSON + overlays): {(time.perf_counter() - t0) * 1000:.1f} ms")
    print(f"{'profile':<28} {'policy':<16} {'predict med/min ms':>20} {'check med ms':>14}")
    for path in sorted(PROFILES.glob("*@*.json"))[:6]:
        prof = HostProfile.load(path)
        for v, pol in pols.items():
            med, mn = timed(lambda prof=prof, pol=pol: predict_supported(prof, pol), n)
            cmed, _ = timed(lambda prof=prof, pol=pol: compare_supported(
                predict_supported(prof, pol).table, prof.kvm.supported, pol), n)
            worst = max(worst, med)
            print(f"{path.stem:<28} {v:<16} {med:9.2f} / {mn:6.2f} {cmed:14.2f}")
    verdict = "OK" if worst < TARGET_MS else "TOO SLOW"
    print(f"worst median predict: {worst:.2f} ms (target < {TARGET_MS:.0f} ms): {verdict}")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
