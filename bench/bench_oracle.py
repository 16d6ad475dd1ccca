"""Oracle figures: the KVM policy model against real KVM in emulated hosts.

Boots the oracle matrix (rig/emulate/data/oracle.toml: Debian kernels × L1
CPU models × kvm_amd parameters; each L1 once, profile-only image), checks
the policy prediction against each L1's real KVM_GET_SUPPORTED_CPUID, and
prints per host, per kernel series and in total: registers (words) and bits
compared, mismatches (unexplained and known), whether the series' policy was
imported or a stand-in, L1 boot time and the matrix's wall time in minutes;
plus, with --l2, one full
L1 with L2 probe cases and the time per L2 case.

    python3 bench/bench_oracle.py                      # boot the matrix, print figures
    python3 bench/bench_oracle.py --capture DIR        # also save the profiles
    python3 bench/bench_oracle.py --profiles DIR       # no boots: check saved profiles
    python3 bench/bench_oracle.py --l2                 # add the L2 timing run
    python3 bench/bench_oracle.py --l2-only            # just that
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rig.emulate.oracle import Captured, capture_matrix, check_profile, load_matrix  # noqa: E402
from rig.host.profile import HostProfile  # noqa: E402
from rig.images.kernel import release_series  # noqa: E402


def l2_timing(cpus: list[str]) -> None:
    from rig.emulate import EmulatedHost

    t0 = time.monotonic()
    with EmulatedHost("EPYC-Rome", "6.12") as h:
        boot = time.monotonic() - t0
        times = []
        for cpu in cpus:
            r = h.run_probe(cpu, timeout=60)
            times.append(r.wall_seconds)
            print(f"  L2 -cpu {cpu:<20} exit {r.exit_status}  {r.wall_seconds:5.2f} s (L1 clock {r.l1_seconds:.2f} s)")
    total = time.monotonic() - t0
    print(f"L2: L1 (full image) boot {boot:.1f} s, {len(cpus)} L2 cases, mean {sum(times) / len(times):.2f} s/case, "
          f"total {total:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", type=Path, metavar="DIR", help="save the captured profiles here")
    ap.add_argument("--profiles", type=Path, metavar="DIR", help="check saved profiles instead of booting")
    ap.add_argument("--parallel", type=int, help="L1s at once (default from the matrix file)")
    ap.add_argument("--l2", action="store_true", help="also time L2 probe cases in one full L1")
    ap.add_argument("--l2-only", action="store_true", help="only the L2 timing run")
    args = ap.parse_args(argv)
    l2_cpus = ["EPYC-Rome", "EPYC-Rome,-avx2", "qemu64,+x2apic", "EPYC", "qemu64"]
    if args.l2_only:
        l2_timing(l2_cpus)
        return 0

    matrix = load_matrix()
    t0 = time.monotonic()
    if args.profiles:
        items = [(p.stem, HostProfile.load(p), None) for p in sorted(args.profiles.glob("*.json"))]
    else:
        def progress(c: Captured) -> None:
            print(f"  booted {str(c.host):<28} {c.seconds:5.1f} s" + (f"  ERROR {c.error}" if c.error else ""),
                  flush=True)

        caps = capture_matrix(matrix.hosts(), args.capture, parallel=args.parallel or matrix.parallel,
                              progress=progress)
        items = [(str(c.host), c.profile, c) for c in caps]
    wall = time.monotonic() - t0

    words = bits = mism = known = failed = stand_in = 0
    by_feature: Counter[str] = Counter()
    by_series: dict[str, list[int]] = {}  # series -> [hosts, bits, mismatches, stand-in]
    print(f"\n{'host':<30} {'policy':<14} {'words':>5} {'bits':>6} {'mism':>5} {'known':>5}  differences")
    for name, prof, _c in items:
        if prof is None:
            failed += 1
            print(f"{name:<30} capture failed: {_c.error if _c else '?'}")
            continue
        r = check_profile(prof, name)
        series = release_series(prof.kernel.release or "?")
        row = by_series.setdefault(series, [0, 0, 0, 0])
        row[0] += 1
        if not r.exact:
            stand_in += 1
            row[3] += 1
        if r.error:
            failed += 1
            print(f"{name:<30} {r.error}")
            continue
        row[1] += r.bits
        row[2] += len(r.differences)
        words += r.words
        bits += r.bits
        mism += len(r.differences)
        known += len(r.known)
        names = [d.feature or str(d.location) for d in r.differences]
        by_feature.update(names)
        shown = ", ".join(names[:5]) + (f", ... (+{len(names) - 5})" if len(names) > 5 else "")
        policy = r.policy + ("" if r.exact else " (STAND-IN)")
        print(f"{name:<30} {policy:<14} {r.words:>5} {r.bits:>6} {len(r.differences):>5} {len(r.known):>5}  {shown}")
    agree = sum(1 for name, prof, _ in items if prof is not None and check_profile(prof, name).ok)
    print(f"\n{'series':<8} {'hosts':>5} {'bits':>7} {'mism':>5}  policy")
    for series, (n, b, m, si) in sorted(by_series.items(), key=lambda kv: [int(x) for x in kv[0].split(".")
                                                                            if x.isdigit()]):
        print(f"{series:<8} {n:>5} {b:>7} {m:>5}  {'stand-in (not imported)' if si else 'imported'}")
    print(f"\nhosts {len(items)} ({failed} failed, {stand_in} on a stand-in policy), full agreement "
          f"{agree}/{len(items)}")
    print(f"compared {words} words / {bits} bits; mismatches {mism} "
          f"({100 * (bits - mism) / bits if bits else 0:.3f} % of bits agree), known differences {known}")
    if by_feature:
        print("most frequent mismatches: " + ", ".join(f"{n} x{k}" for n, k in by_feature.most_common(10)))
    if not args.profiles:
        boots = [c.seconds for _, _, c in items if c is not None]
        print(f"L1 boots and reloads: {len(boots)}, mean {sum(boots) / len(boots):.1f} s, max {max(boots):.1f} s, "
              f"matrix wall time {wall:.1f} s = {wall / 60:.1f} min (parallel {args.parallel or matrix.parallel})")
    if args.l2:
        l2_timing(l2_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
