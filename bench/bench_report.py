"""The nightly HTML report: its size, and how long it takes to open in headless Chromium next to an empty page.

    python3 bench/bench_report.py [RUN_DIR] [--loads 5]

RUN_DIR: a finished run of the nightly matrix (``rig run matrices/nightly.toml --no-history --out DIR``);
without it the benchmark makes one in a temporary directory first (about 1-3 minutes).  The reports are
rewritten from the run (``rig report``'s code path, timed), then each page is opened ``--loads`` times in one
headless Chromium (a fresh navigation each time) and the median is printed for:

* load: wall time from the navigation command to the page's load event (the page's inline script, which draws
  the overview and the first cases, runs before it);
* ready: the page's own navigation timing until its script has finished (``data-ready``), in the page's clock;
* main-thread CPU: the renderer's task time (thread ticks, DevTools ``Performance.getMetrics``) from
  navigation to the first frame, split into layout, style and script: the figure that does not depend on how
  busy the machine is (wall times on a shared 2-core machine do).

Goals (issue 16): under 1.5 MB and under a second for the 1796-case nightly.  The machine is shared: the load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rig.report.headless import Browser  # noqa: E402
from rig.report.write import write_reports  # noqa: E402
from rig.run.rundir import RunDir  # noqa: E402

READY = ("new Promise(r => { var f = () => document.documentElement.dataset.ready ? "
         "r(performance.now()) : setTimeout(f, 5); f(); })")


def _nightly(tmp: Path) -> Path:
    out = tmp / "nightly"
    print(f"making the nightly run in {out} (rig run matrices/nightly.toml) ...", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(REPO / "matrices" / "nightly.toml"),
                        "--no-history", "--out", str(out)], env=env, stdout=subprocess.DEVNULL)
    if p.returncode not in (0, 1):
        sys.exit(f"bench_report: rig run failed (exit {p.returncode})")
    return out


METRICS = ("TaskDuration", "LayoutDuration", "RecalcStyleDuration", "ScriptDuration")


def _metrics(b: Browser) -> dict[str, float]:
    return {m["name"]: m["value"] for m in b.call("Performance.getMetrics")["metrics"] if m["name"] in METRICS}


def _loads(b: Browser, page: Path, n: int, script_ready: bool) -> tuple[float, float | None, dict[str, float]]:
    """Median wall time to the load event, median script-done time, median main-thread CPU per metric (ms)."""
    walls, ready, cpu = [], [], {k: [] for k in METRICS}
    for _ in range(n):
        b.open("about:blank")
        before = _metrics(b)
        walls.append(b.open(page))
        if script_ready:
            ready.append(b.eval(READY))
        b.eval("new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")  # the first frame is drawn
        after = _metrics(b)
        for k in METRICS:
            cpu[k].append((after[k] - before[k]) * 1000)
    return (statistics.median(walls), statistics.median(ready) if ready else None,
            {k: statistics.median(v) for k, v in cpu.items()})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="a finished nightly run (default: make one)")
    ap.add_argument("--loads", type=int, default=5, help="page loads per page (median printed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        run = args.run_dir or _nightly(Path(tmp))
        rd = RunDir.open_existing(run)
        results = rd.results()
        out = Path(tmp) / "reports"
        t0 = time.perf_counter()
        paths = write_reports(rd, results, out=out)
        t_write = time.perf_counter() - t0
        empty = Path(tmp) / "empty.html"
        empty.write_text("<!DOCTYPE html><html><head><meta charset=utf-8><title>empty</title></head><body></body></html>")
        size = paths.html.stat().st_size
        with Browser() as b:
            # main-thread CPU time (thread ticks) of the page's tasks: independent of other load on the machine
            b.call("Performance.enable", {"timeDomain": "threadTicks"})
            _loads(b, empty, 1, False)  # warm the browser
            e_wall, _, e_cpu = _loads(b, empty, args.loads, False)
            r_wall, r_ready, r_cpu = _loads(b, paths.html, args.loads, True)
            cells = b.eval("document.querySelectorAll('#ov-grid td.cell').length")
            cards = b.eval("document.querySelectorAll('#list .case').length")
            marks = b.eval("performance.getEntriesByType('mark').map(m => [m.name, m.startTime])")
            dom = b.eval("performance.getEntriesByType('navigation')[0].domInteractive")
        json_size = paths.json.stat().st_size
    print(f"run: {run} ({len(results)} cases); load average {os.getloadavg()[0]:.2f}")
    print(f"reports written in {t_write:.2f} s (report.json, junit.xml, results.tap, report.html)")
    print(f"report.html: {size} bytes ({size / 1e6:.2f} MB; goal < 1.5 MB); report.json {json_size} bytes")
    print(f"load (median of {args.loads}): report {r_wall * 1000:.0f} ms, empty page {e_wall * 1000:.0f} ms, "
          f"difference {(r_wall - e_wall) * 1000:.0f} ms (goal: opens in under 1 s)")
    print(f"main-thread CPU to the first frame (median): report {r_cpu['TaskDuration']:.0f} ms (layout "
          f"{r_cpu['LayoutDuration']:.0f}, style {r_cpu['RecalcStyleDuration']:.0f}, script {r_cpu['ScriptDuration']:.0f}), "
          f"empty page {e_cpu['TaskDuration']:.0f} ms")
    print(f"page script done at {r_ready:.0f} ms after navigation start; {cells} overview cells, "
          f"{cards} cases rendered of {len(results)} (the rest on scroll)")
    print("page timeline (ms after navigation start, last load): HTML parsed " f"{dom:.0f}, " +
          ", ".join(f"{name.removeprefix('rig-')} {t:.0f}" for name, t in marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
