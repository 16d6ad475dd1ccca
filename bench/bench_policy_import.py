"""Benchmark: importing every shipped policy from its Debian source, and the policies against real KVM.

Prints, per kernel series: the time to get the importer's files (cached after the first run; the first run
downloads Debian's packages) and to import them, and whether the result equals the shipped file; then, for
every oracle profile (real KVM_GET_SUPPORTED_CPUID of a Debian kernel in an emulated host), the bits compared
and the mismatches of the model.  Run: ``python3 bench/bench_policy_import.py``.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from pathlib import Path

from rig.emulate.oracle import count_compared
from rig.host.profile import HostProfile
from rig.policy import compare_supported, load_policy, predict_supported
from rig.policy.importer import import_tree
from rig.policy.source import POLICY_SERIES, SOURCE_PACKAGE_SERIES, fetch_source, fetch_source_package

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "tests" / "unit" / "data" / "policy" / "oracle-profiles"


def main() -> int:
    print(f"{'series':<7} {'from':<34} {'fetch s':>8} {'import ms':>10}  same as shipped")
    for series in [*POLICY_SERIES, *SOURCE_PACKAGE_SERIES]:
        committed = json.loads(resources.files("rig.policy").joinpath(f"data/linux-{series}.json").read_text())
        t0 = time.perf_counter()
        if series in SOURCE_PACKAGE_SERIES:
            src = fetch_source_package(SOURCE_PACKAGE_SERIES[series])
        else:
            src = fetch_source(series, version=committed["source"]["package_version"])
        t1 = time.perf_counter()
        pol = import_tree(src.tree)
        t2 = time.perf_counter()
        got = json.loads(pol.dumps())
        for d in (got, committed):
            d["source"].pop("debian_patches", None)
        print(f"{series:<7} {src.package + ' ' + src.package_version:<34} {t1 - t0:8.1f} {(t2 - t1) * 1000:10.0f}  "
              f"{'yes' if got == committed else 'NO'}")
    total = bad = 0
    print(f"\n{'oracle profile (real KVM)':<34} {'policy':<8} {'bits':>7} {'mismatches':>10}")
    for path in sorted(PROFILES.glob("*@*.json")):
        prof = HostProfile.load(path)
        pol = load_policy(prof.kernel.release or "")
        table = predict_supported(prof, pol).table
        n = count_compared(table, prof.kvm.supported)[1]
        m = len(compare_supported(table, prof.kvm.supported, pol))
        total += n
        bad += m
        print(f"{path.stem:<34} {pol.version:<8} {n:7} {m:10}")
    print(f"total: {len(list(PROFILES.glob('*@*.json')))} hosts, {total} bits compared, {bad} mismatches")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
