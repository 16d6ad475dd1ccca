"""Throughput of `rig run` (cases/min) next to QEMU's bare start-to-exit time for the same probe.

    python3 bench/bench_run.py [--cases 200] [--jobs 2] [--matrix matrices/nightly.toml]

1. bare: plain ``qemu-system-x86_64 -M microvm -accel tcg -cpu MODEL -kernel probe.elf`` to its exit,
   for the same cases (no QMP, no parsing), sequentially (ms per start-to-exit) and with ``--jobs``
   processes in parallel (cases/min ceiling for this machine);
2. rig: the same cases through the rig (QMP queries, probe parsing, three-way comparison, artifacts,
   one fsync'd JSON line per case) with ``--jobs`` workers.

Prints the load average before and after: other work on the machine lowers both figures alike.
Goal (issue 5): at least 600 cases/min on 2 cores, i.e. about 20 ms of rig overhead per case.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rig.guest.probe_build import build_probe  # noqa: E402
from rig.matrix.expand import expand  # noqa: E402
from rig.matrix.load import load_matrix  # noqa: E402
from rig.qemu.binaries import find_qemu  # noqa: E402
from rig.qemu.cmdline import QemuCommand  # noqa: E402
from rig.run.execute import RunContext, run_cases  # noqa: E402
from rig.run.guests import probe_boot  # noqa: E402
from rig.run.rundir import RunDir, RunInfo  # noqa: E402


def pick(cases: list, n: int) -> list:
    if n >= len(cases):
        return cases
    step = len(cases) / n
    return [cases[int(i * step)] for i in range(n)]


async def bare(cases: list, probe, binary, jobs: int, out: Path) -> tuple[float, list[float], list]:
    sem = asyncio.Semaphore(jobs)
    times: list[float] = []
    hung: list = []

    async def one(i: int, c) -> None:
        boot = probe_boot(c.machine, probe)
        cmd = QemuCommand(binary=str(binary.path), machine=boot.machine, accel=c.accel, cpu=c.cpu_arg,
                          kernel=boot.kernel, drive=boot.drive, serial=out / f"s{i}.log", firmware_dir=binary.firmware_dir)
        async with sem:
            t = time.perf_counter()
            p = await asyncio.create_subprocess_exec(*cmd.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL)
            try:
                await asyncio.wait_for(p.wait(), timeout=c.timeout)
            except TimeoutError:  # a case that hangs (the rig reports it as outcome "timeout")
                hung.append(c)
                p.kill()
                await p.wait()
                return
            times.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(cases)))
    return time.perf_counter() - t0, times, hung


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(REPO / "matrices" / "nightly.toml"))
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10, help="per-case timeout (s) for bare and rig runs")
    args = ap.parse_args()

    matrix = load_matrix(args.matrix)
    cases = [dataclasses.replace(c, timeout=args.timeout) for c in pick(expand(matrix), args.cases)]
    probe = build_probe()
    binary = find_qemu(cases[0].qemu)
    print(f"matrix {matrix.name}: {len(cases)} cases (spread over the matrix), {args.jobs} jobs, "
          f"QEMU {'.'.join(map(str, binary.version))}, {os.cpu_count()} CPUs")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        out = Path(tmp)
        # cases that hang cost their timeout whoever runs them: find them first, time the others
        _, _, hung = asyncio.run(bare(cases, probe, binary, 2 * args.jobs, out))
        cases = [c for c in cases if c not in hung]
        _, seq, _ = asyncio.run(bare(cases[: min(40, len(cases))], probe, binary, 1, out))
        par_wall, _, _ = asyncio.run(bare(cases, probe, binary, args.jobs, out))
        rd = RunDir.create(out / "run", matrix.name)
        rd.write_info(RunInfo(matrix=str(matrix.path), matrix_name=matrix.name, started_at="", argv=["bench"]))
        ctx = RunContext(matrix, rd, probe)
        t0 = time.perf_counter()
        results = asyncio.run(run_cases(ctx, cases, jobs=args.jobs))
        rig_wall = time.perf_counter() - t0
        rd.close()
    seq.sort()
    bare_ms = 1000 * sum(seq) / len(seq)
    bare_rate = len(cases) / par_wall * 60
    rig_rate = len(results) / rig_wall * 60
    rig_ms = 1000 * rig_wall * args.jobs / len(results)
    par_ms = 1000 * par_wall * args.jobs / len(cases)
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    print(f"bare QEMU start-to-exit (sequential, {len(seq)} cases): mean {bare_ms:.1f} ms, "
          f"median {1000 * seq[len(seq) // 2]:.1f} ms")
    print(f"bare QEMU with {args.jobs} in parallel: {bare_rate:.0f} cases/min ({par_ms:.1f} ms per case per job)"
          + (f"; left out {len(hung)} case(s) that hang (>{args.timeout:g} s): {', '.join(c.id for c in hung[:5])}"
             if hung else ""))
    print(f"rig run with {args.jobs} jobs: {rig_rate:.0f} cases/min ({rig_ms:.1f} ms per case per job); "
          f"outcomes {outcomes}")
    print(f"rig overhead per case over bare QEMU: {rig_ms - par_ms:+.1f} ms (limit ~20 ms); goal 600 cases/min: "
          f"{'met' if rig_rate >= 600 else 'not met'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
