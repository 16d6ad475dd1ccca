"""Throughput of `rig run` (cases/min) next to QEMU's bare start-to-exit time for the same probe.

    python3 bench/bench_run.py [--cases 200] [--jobs 2] [--matrix matrices/nightly.toml] [--no-breakdown]

1. bare: plain ``qemu-system-x86_64 -M microvm -accel tcg -cpu MODEL -kernel probe.elf`` to its exit,
   for the same cases (no QMP, no parsing), sequentially (ms per start-to-exit) and with ``--jobs``
   processes in parallel (cases/min ceiling for this machine);
2. rig: the same cases through the rig (QMP queries, probe parsing, three-way comparison, artifacts,
   one fsync'd JSON line per case) with ``--jobs`` workers.

Then where the rig's time per case goes:

* CPU: the rig's own Python CPU per case (``process_time``; all workers share one event loop,
  so this CPU competes with QEMU for the cores), split by step (each step's thread CPU;
  "QMP protocol, event loop, rest" is the remainder: qemu.qmp's reader/writer tasks and
  asyncio itself), and QEMU's CPU per case (children's rusage) next to bare QEMU's;
* wall: the mean timeline of one case (spawn -> QMP greeting -> QMP ready, i.e. QEMU's
  start-up is over -> queries answered -> QEMU exited -> result recorded).

Prints the load average with each figure: other work on the machine lowers all figures.
Goal (issue 5): at least 600 cases/min on 2 cores, i.e. about 20 ms of rig overhead per case.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rig.images.probe import build_probe  # noqa: E402
from rig.matrix.expand import expand  # noqa: E402
from rig.matrix.load import load_matrix  # noqa: E402
from rig.qemu.binaries import find_qemu  # noqa: E402
from rig.qemu.cmdline import QemuCommand  # noqa: E402
from rig.run.context import RunContext  # noqa: E402
from rig.run.execute import run_cases  # noqa: E402
from rig.run.guests import probe_boot  # noqa: E402
from rig.run.rundir import RunDir, RunInfo  # noqa: E402


def pick(cases: list, n: int) -> list:
    if n >= len(cases):
        return cases
    step = len(cases) / n
    return [cases[int(i * step)] for i in range(n)]


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


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


# ---------------------------------------------------------------------------
# the CPU breakdown: each step's thread CPU, by wrapping the functions the case flow calls


class StepClock:
    """Thread CPU spent in wrapped functions (and wrapped coroutines, step by step)."""

    def __init__(self) -> None:
        self.cpu: Counter[str] = Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        fn = getattr(owner, name)
        cpu = self.cpu

        def timed(*a, **k):
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[label] += time.thread_time() - t

        setattr(owner, name, timed)

    def wrap_async(self, owner, name: str, label: str) -> None:
        fn = getattr(owner, name)
        cpu = self.cpu

        class Timed:
            def __init__(self, coro) -> None:
                self.coro = coro

            def __await__(self):
                gen = self.coro.__await__()
                send, exc = None, None
                while True:
                    t = time.thread_time()
                    try:
                        step = gen.throw(exc) if exc is not None else gen.send(send)
                    except StopIteration as e:
                        cpu[label] += time.thread_time() - t
                        return e.value
                    cpu[label] += time.thread_time() - t
                    try:
                        send, exc = (yield step), None
                    except BaseException as e:  # noqa: BLE001 - passed on into the coroutine
                        send, exc = None, e

        setattr(owner, name, lambda *a, **k: Timed(fn(*a, **k)))


def instrument() -> StepClock:
    import rig.qemu.launcher as launcher
    import rig.run.assemble as assemble
    import rig.run.guests as guests
    import rig.run.predict as predict
    import rig.run.probe_case as probe_case
    import rig.run.rundir as rundir

    clock = StepClock()
    clock.wrap_async(probe_case, "launch", "launch")
    clock.wrap(launcher, "_start", "spawn (vfork+exec)")
    clock.wrap(guests.ProbeReader, "__call__", "parse (probe transcript)")
    clock.wrap(predict.Predictor, "__call__", "predict (QEMU model)")
    for name in ("compare", "detect_quirk", "words_of", "case_fields", "match_outcome"):
        clock.wrap(assemble, name, "compare (+quirk, words)")
    clock.wrap(assemble, "write_json", "write views.json")
    clock.wrap(rundir.RunDir, "append", "write result line (+fsync)")
    clock.wrap(rundir.RunDir, "case_dir", "case directory")
    return clock


def breakdown(clock: StepClock, n: int, py_cpu: float) -> list[tuple[str, float]]:
    cpu = dict(clock.cpu)
    # the launch runs the spawn and the probe parse (the prediction runs beside it, in run_case)
    launch = cpu.pop("launch", 0.0) - sum(cpu.get(k, 0.0) for k in ("spawn (vfork+exec)", "parse (probe transcript)"))
    rows = [("launch (QMP client, files, classify)", launch), *cpu.items()]
    rows.append(("QMP protocol tasks, event loop, rest", py_cpu - sum(v for _, v in rows)))
    return [(k, 1000 * v / n) for k, v in rows]


def timeline(rd: RunDir, results: list) -> str:
    marks: dict[str, list[float]] = {}
    for r in results:
        try:
            t = json.loads((rd.path / r.artifacts / "views.json").read_text())["timings_ms"]
        except (OSError, ValueError, KeyError):
            continue
        for k, v in t.items():
            marks.setdefault(k, []).append(v)
    m = {k: statistics.mean(v) for k, v in marks.items()}
    total = 1000 * statistics.mean(r.duration_s for r in results)
    parts = []
    if "spawn" in m:
        parts.append(f"spawn {m['spawn']:.1f}")
    if "qmp_connected" in m:
        parts.append(f"QMP greeting at {m['qmp_connected']:.1f}")
    if "qmp_ready" in m:
        parts.append(f"QMP ready (QEMU start-up over) at {m['qmp_ready']:.1f}")
    if "queries" in m:
        parts.append(f"queries answered +{m['queries']:.1f}")
    if "exit" in m:
        parts.append(f"QEMU exited at {m['exit']:.1f}")
        parts.append(f"result recorded at {total:.1f} (+{total - m['exit']:.1f} after exit)")
    return "; ".join(parts) + " ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default=str(REPO / "matrices" / "nightly.toml"))
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10, help="per-case timeout (s) for bare and rig runs")
    ap.add_argument("--no-breakdown", action="store_true",
                    help="no per-step CPU clocks (they cost a few percent of the rig's CPU)")
    args = ap.parse_args()

    matrix = load_matrix(args.matrix)
    cases = [dataclasses.replace(c, timeout=args.timeout) for c in pick(expand(matrix), args.cases)]
    probe = build_probe()
    binary = find_qemu(cases[0].qemu)
    print(f"matrix {matrix.name}: {len(cases)} cases (spread over the matrix), {args.jobs} jobs, "
          f"QEMU {'.'.join(map(str, binary.version))}, {os.cpu_count()} CPUs; {load()}")
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        out = Path(tmp)
        # cases that hang cost their timeout whoever runs them: find them first, time the others
        _, _, hung = asyncio.run(bare(cases, probe, binary, 2 * args.jobs, out))
        cases = [c for c in cases if c not in hung]
        _, seq, _ = asyncio.run(bare(cases[: min(40, len(cases))], probe, binary, 1, out))
        seq_load = load()
        k0 = children_cpu()
        par_wall, _, _ = asyncio.run(bare(cases, probe, binary, args.jobs, out))
        bare_cpu = children_cpu() - k0
        par_load = load()

        rd = RunDir.create(out / "run", matrix.name)
        rd.write_info(RunInfo(matrix=str(matrix.path), matrix_name=matrix.name, started_at="", argv=["bench"]))
        ctx = RunContext(matrix, rd, probe)
        asyncio.run(run_cases(ctx, cases[:2], jobs=1))  # warm: binary facts, model data, KVM tables
        clock = None if args.no_breakdown else instrument()
        k0, c0, t0 = children_cpu(), time.process_time(), time.perf_counter()
        results = asyncio.run(run_cases(ctx, cases, jobs=args.jobs))
        rig_wall = time.perf_counter() - t0
        py_cpu, qemu_cpu = time.process_time() - c0, children_cpu() - k0
        rig_load = load()
        line = timeline(rd, results)
        rd.close()

    n = len(results)
    seq.sort()
    bare_ms = 1000 * sum(seq) / len(seq)
    bare_rate = len(cases) / par_wall * 60
    rig_rate = n / rig_wall * 60
    rig_ms = 1000 * rig_wall * args.jobs / n
    par_ms = 1000 * par_wall * args.jobs / len(cases)
    outcomes = Counter(str(r.outcome) for r in results)
    print(f"bare QEMU start-to-exit (sequential, {len(seq)} cases): mean {bare_ms:.1f} ms, "
          f"median {1000 * seq[len(seq) // 2]:.1f} ms; {seq_load}")
    print(f"bare QEMU with {args.jobs} in parallel: {bare_rate:.0f} cases/min ({par_ms:.1f} ms per case per job); "
          f"{par_load}" + (f"; left out {len(hung)} case(s) that hang (>{args.timeout:g} s): "
                           f"{', '.join(c.id for c in hung[:5])}" if hung else ""))
    print(f"rig run with {args.jobs} jobs: {rig_rate:.0f} cases/min ({rig_ms:.1f} ms per case per job); "
          f"outcomes {dict(outcomes)}; {rig_load}")
    print(f"rig overhead per case over bare QEMU: {rig_ms - par_ms:+.1f} ms (limit ~20 ms); goal 600 cases/min: "
          f"{'met' if rig_rate >= 600 else 'not met'}; rig {rig_rate:.0f} vs bare {bare_rate:.0f} cases/min")
    print(f"CPU per case: QEMU {1000 * qemu_cpu / n:.1f} ms (bare {1000 * bare_cpu / len(cases):.1f} ms), "
          f"rig's Python {1000 * py_cpu / n:.1f} ms{' (with the step clocks)' if clock else ''}")
    if clock is not None:
        for label, ms in breakdown(clock, n, py_cpu):
            print(f"  {label:40s} {ms:6.2f} ms")
    print(f"one case, wall (mean, from its start): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
