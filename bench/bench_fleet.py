#!/usr/bin/env python3
"""Benchmark: a matrix through the fleet (two local workers) against ``rig run --jobs 2``, same machine.

Starts its own redis-server and PostgreSQL (unix sockets, temporary directories, stopped by PID),
two ``rig fleet worker --jobs 1`` of one class, and times ``rig fleet submit MATRIX --shards S --wait``
from submit to the nightly's close; then times ``rig run MATRIX --jobs 2 --no-history`` (or the other
way round with --run-first).  Prints cases, wall time and throughput of each, the 1-minute load
average before and after each (the machine is shared), and the ratio fleet/run (goal: >= 0.9).

    python3 bench/bench_fleet.py [--matrix matrices/nightly.toml] [-k EXPR] [--shards 8] [--run-first]

Default: the whole nightly matrix (QEMU 7.2: ~1800 cases, a few minutes each way on 2 cores).
A fixed slice: -k "EPYC or Opteron" (430 cases with QEMU 7.2).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rig.fleet.services import start_postgres, start_redis  # noqa: E402


def rig(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rig.cli", *args], env=env, cwd=REPO, text=True, **kw)


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def bench_fleet(matrix: str, k: str | None, shards: int, tmp: Path) -> tuple[int, float, str, str]:
    redis, pg = start_redis(tmp / "redis"), start_postgres()
    workers = []
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for i in (1, 2):
            log = open(tmp / f"worker{i}.log", "w")
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "rig.cli", "fleet", "worker", "--broker", redis.url, "--db", pg.url,
                 "--class", "bench", "--jobs", "1", "--name", f"w{i}", "--workdir", str(tmp / f"w{i}"),
                 "--loglevel", "INFO"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO))
        end = time.monotonic() + 300  # both workers consuming before the clock starts
        while not all(" ready." in (tmp / f"worker{i}.log").read_text() for i in (1, 2)):
            if time.monotonic() > end or any(w.poll() is not None for w in workers):
                raise SystemExit(f"the workers did not start; logs in {tmp}")
            time.sleep(0.2)
        before = load()
        t0 = time.monotonic()
        p = rig("fleet", "submit", matrix, "--broker", redis.url, "--db", pg.url, "--classes", "bench",
                "--shards", str(shards), "--wait", *(["-k", k] if k else []), capture_output=True)
        dt = time.monotonic() - t0
        after = load()
        if p.returncode not in (0, 1):
            raise SystemExit(f"fleet submit failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        line = [x for x in p.stdout.splitlines() if x.strip().startswith("bench:")][-1]  # the closing summary
        cases = int(line.split(":")[1].split("/")[0])
        return cases, dt, before, after
    finally:
        for w in workers:
            if w.poll() is None:
                os.kill(w.pid, signal.SIGTERM)
                w.wait(60)
        redis.stop()
        pg.stop(signal.SIGINT)


def bench_run(matrix: str, k: str | None, tmp: Path) -> tuple[int, float, str, str]:
    before = load()
    t0 = time.monotonic()
    p = rig("run", matrix, "--jobs", "2", "--no-history", "--out", str(tmp / "run"), *(["-k", k] if k else []),
            capture_output=True)
    dt = time.monotonic() - t0
    after = load()
    if p.returncode not in (0, 1):
        raise SystemExit(f"rig run failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    cases = int(p.stdout.split("rig run: ")[1].split(" cases")[0])
    return cases, dt, before, after


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default="matrices/nightly.toml")
    ap.add_argument("-k", help="a fixed slice of the matrix (as rig run -k)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--run-first", action="store_true", help="time rig run before the fleet")
    args = ap.parse_args()
    print(f"matrix {args.matrix}" + (f" -k {args.k!r}" if args.k else "") + f"; fleet: 2 workers x --jobs 1, "
          f"{args.shards} shards; rig run --jobs 2; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="rig-bench-fleet-") as d:
        tmp = Path(d)
        order = ["run", "fleet"] if args.run_first else ["fleet", "run"]
        figures = {}
        for what in order:
            figures[what] = (bench_fleet(args.matrix, args.k, args.shards, tmp) if what == "fleet"
                             else bench_run(args.matrix, args.k, tmp))
            n, dt, b, a = figures[what]
            label = "fleet (2 workers)" if what == "fleet" else "rig run --jobs 2"
            print(f"{label:18} {n} cases in {dt:6.1f} s = {n / dt:6.2f} cases/s  (load average {b} before, {a} after)",
                  flush=True)
    (nf, tf, _, _), (nr, tr, _, _) = figures["fleet"], figures["run"]
    ratio = (nf / tf) / (nr / tr)
    print(f"fleet/run throughput ratio: {ratio:.2f} (goal >= 0.9){'' if nf == nr else ' (case counts differ!)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
