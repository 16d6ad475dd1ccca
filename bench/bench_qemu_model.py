"""Benchmark: QEMU layer model predictions per second (every QEMU 7.2 model, TCG, microvm), next to
the cost of asking QEMU itself (one `-S` QEMU per case for QMP feature-words).

Run: python3 bench/bench_qemu_model.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from qemu_configured import configured  # noqa: E402

from rig.qemu.binaries import find_qemu, gather_facts  # noqa: E402
from rig.qemu.model import model_names, predict_guest  # noqa: E402


def main() -> None:
    binary = find_qemu("system")
    t0 = time.perf_counter()
    facts = gather_facts(binary)
    t_facts = time.perf_counter() - t0
    names = [n for n in model_names(facts) if n not in ("host", "base")]
    t0 = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for n in names:
            predict_guest(facts, n + ",-avx2,+x2apic", "tcg", "microvm")
    t_pred = (time.perf_counter() - t0) / (rounds * len(names))
    sample = names[:10]
    t0 = time.perf_counter()
    for n in sample:
        configured(binary.path, n, "microvm")
    t_qemu = (time.perf_counter() - t0) / len(sample)
    print(f"QEMU {binary.series}: {len(names)} models; facts (cached) {t_facts * 1000:.0f} ms")
    print(f"prediction: {t_pred * 1000:.2f} ms per case ({1 / t_pred:.0f} cases/s)")
    print(f"QEMU -S + QMP feature-words: {t_qemu * 1000:.0f} ms per case")


if __name__ == "__main__":
    main()
