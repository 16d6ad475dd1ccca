#!/usr/bin/env python3
"""Benchmark of `rig run` with OS guests (linux, ssh) under TCG: throughput and per-case cost.

Runs the real `rig run` (subprocess, ``--no-history``) on ``matrices/linux.toml`` and, when the ssh image
is built (``rig images build ssh``), ``matrices/ssh.toml``; prints cases per minute for the whole run
(image preparation included) and the median / min / max of the per-case durations the results record.

    python3 bench/bench_run_os_guests.py [--jobs N] [--no-ssh] [--matrix PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ssh_image_ready() -> bool:
    from rig.images import cache
    from rig.images.ssh import SshImageRecipe

    return cache.is_complete(cache.entry_dir("ssh-rootfs", SshImageRecipe.load().rootfs_key()))


def bench(matrix: Path, jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rig-bench-os-") as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(matrix), "--out", str(out), "--jobs", str(jobs),
                            "--no-history"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        lines = (out / "results.jsonl").read_text().splitlines() if (out / "results.jsonl").exists() else []
        results = [json.loads(x) for x in lines]
    if not results:
        print(f"{matrix.name}: no results (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
        return
    durs = sorted(r["duration_s"] for r in results)
    verdicts: dict[str, int] = {}
    for r in results:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    print(f"{matrix.name}: {len(results)} cases, {jobs} jobs, {wall:.1f} s wall -> {len(results) / wall * 60:.1f} cases/min; "
          f"per case median {statistics.median(durs):.2f} s (min {durs[0]:.2f}, max {durs[-1]:.2f}); "
          f"verdicts {verdicts}; exit {p.returncode}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=max(1, len(os.sched_getaffinity(0))))
    ap.add_argument("--no-ssh", action="store_true", help="skip the ssh matrix")
    ap.add_argument("--matrix", action="append", type=Path, help="matrix files (default: linux.toml, ssh.toml)")
    args = ap.parse_args()
    matrices = args.matrix or [REPO / "matrices" / "linux.toml"]
    if not args.matrix and not args.no_ssh:
        if ssh_image_ready():
            matrices.append(REPO / "matrices" / "ssh.toml")
        else:
            print("ssh.toml: skipped (the ssh image is not built: rig images build ssh, as root)")
    for m in matrices:
        bench(m, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
