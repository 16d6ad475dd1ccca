"""``rig history --html FILE``: trends per host, one self-contained page (inline SVG, no script).

For each host (history key) and matrix: the runs over time as stacked bars of cases per verdict, and
the differing bits per finding class as lines (both from each run's ``report.json``; a run whose
directory is gone keeps its case and failure counts from the database), the runs' table (kernel,
QEMU, microcode: what changed on the host), and between consecutive runs the bits whose configured
or observed value changed, findings new and fixed, outcomes changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from markupsafe import Markup

from ..errors import RigError
from .history_access import HostSeries, RunPoint, database_path, host_series
from .html import _env
from .page import CLASSES, VERDICTS

COLOURS = {"pass": "#2da44e", "expected": "#d4a72c", "fail": "#cf222e", "error": "#8250df", "approximate": "#54aeff",
           "model-gap": "#f0883e", "qemu-behaviour": "#cf222e", "kvm-behaviour": "#8250df", "host-quirk": "#0969da",
           "known-bug": "#9a6700"}
OTHER = "#8c959f"
#: bit changes listed per step (the rest are counted)
MAX_BITS = 300


@cache
def _css() -> str:
    return resources.files("rig.report").joinpath("templates", "report.css").read_text()


def _esc(s: object) -> str:
    return str(Markup.escape(s))


def _axis_max(v: int) -> int:
    """A round axis maximum at or above ``v``."""
    for mag in (1, 10, 100, 1000, 10000, 100000):
        for step in (1, 2, 5):
            if step * mag >= v:
                return step * mag
    return v


def verdict_chart(runs: Sequence[RunPoint], *, width: int = 760, height: int = 220) -> str:
    """Stacked bars: cases per verdict per run (runs without a report.json: cases and failed only)."""
    left, bottom, top = 48, 34, 10
    n = len(runs)
    totals = [sum(r.verdicts.values()) if r.verdicts else r.cases for r in runs]
    ymax = _axis_max(max(totals or [1]) or 1)
    bw = max(4.0, min(40.0, (width - left - 10) / max(n, 1) * 0.7))
    step = (width - left - 10) / max(n, 1)
    scale = (height - bottom - top) / ymax
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>cases per verdict, per run</title>']
    for frac in (0, 0.5, 1):
        y = height - bottom - frac * ymax * scale
        parts.append(f'<line x1="{left}" x2="{width - 5}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d1d9e0"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{round(frac * ymax)}</text>')
    for i, r in enumerate(runs):
        x = left + i * step + (step - bw) / 2
        y = height - bottom
        counts = r.verdicts if r.verdicts is not None else {"pass": r.cases - r.failed, "fail": r.failed}
        order = [v for v in VERDICTS[::-1] if counts.get(v)] + sorted(set(counts) - set(VERDICTS))
        for v in order:
            h = counts[v] * scale
            y -= h
            parts.append(f'<rect class="bar" data-run="{r.id}" data-verdict="{_esc(v)}" x="{x:.1f}" y="{y:.1f}" '
                         f'width="{bw:.1f}" height="{h:.1f}" fill="{COLOURS.get(v, OTHER)}">'
                         f'<title>run {r.id} {_esc(r.recorded_at)}: {counts[v]} {_esc(v)}</title></rect>')
        if n <= 12 or i % max(1, n // 12) == 0 or i == n - 1:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle" font-size="10">'
                         f'{_esc(r.recorded_at[5:16].replace("T", " "))}</text>'
                         f'<text x="{x + bw / 2:.1f}" y="{height - bottom + 26}" text-anchor="middle" font-size="9" '
                         f'fill="#59636e">#{r.id}</text>')
    parts.append("</svg>")
    return "".join(parts)


def class_chart(runs: Sequence[RunPoint], *, width: int = 760, height: int = 200) -> str:
    """Lines: differing bits per finding class per run (runs without a report.json are gaps)."""
    left, bottom, top = 48, 22, 10
    n = len(runs)
    classes = [c for c in CLASSES if any((r.classes or {}).get(c) for r in runs)]
    classes += sorted({c for r in runs for c in (r.classes or {})} - set(CLASSES))
    ymax = _axis_max(max([(r.classes or {}).get(c, 0) for r in runs for c in classes] or [1]) or 1)
    step = (width - left - 10) / max(n, 1)
    scale = (height - bottom - top) / ymax
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>differing bits per finding class, per run</title>']
    for frac in (0, 0.5, 1):
        y = height - bottom - frac * ymax * scale
        parts.append(f'<line x1="{left}" x2="{width - 5}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d1d9e0"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{round(frac * ymax)}</text>')
    for c in classes:
        pts = [(left + i * step + step / 2, height - bottom - (r.classes or {}).get(c, 0) * scale, r)
               for i, r in enumerate(runs) if r.classes is not None]
        colour = COLOURS.get(c, OTHER)
        if len(pts) > 1:
            parts.append(f'<polyline class="line" data-class="{_esc(c)}" fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts)}"/>')
        for x, y, r in pts:
            parts.append(f'<circle class="point" data-class="{_esc(c)}" data-run="{r.id}" cx="{x:.1f}" cy="{y:.1f}" r="3" '
                         f'fill="{colour}"><title>run {r.id}: {(r.classes or {}).get(c, 0)} {_esc(c)} bits</title></circle>')
    if not classes:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="12" fill="#59636e">'
                     "no findings in any run</text>")
    parts.append("</svg>")
    return "".join(parts)


def trends_html(series: Sequence[HostSeries], *, db: str) -> str:
    hosts = []
    for s in series:
        last = s.runs[-1].host
        hosts.append({
            "s": s, "title": f"{last.get('hostname', '?')} ({last.get('cpu_model', '?')})",
            "verdict_chart": Markup(verdict_chart(s.runs)), "class_chart": Markup(class_chart(s.runs)),
            "legend_v": [(v, COLOURS.get(v, OTHER)) for v in VERDICTS],
            "legend_c": [(c, COLOURS.get(c, OTHER)) for c in CLASSES],
            "report": {r.id: (Path(r.run_dir) / "report.html") for r in s.runs},
            "steps": list(reversed(s.steps)), "max_bits": MAX_BITS,
        })
    return _env().get_template("trends.html.j2").render(hosts=hosts, db=db, css=Markup(_css()),
                                                        verdicts=VERDICTS, classes=CLASSES)


def write_output(path: Path, text: str) -> None:
    """Write ``text`` to ``path``: through a temporary file and a rename for a regular file, in place for
    anything else the user named (``/dev/stdout``, a FIFO: never replaced by a regular file)."""
    if path.exists() and not path.is_file():
        with open(path, "w") as f:
            f.write(text)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RigError(f"{path}: cannot write: {e.strerror}", hint="choose another --html FILE") from None


def write_trends(out: Path, *, db: Path | None, host: str | None = None, matrix: str | None = None) -> list[HostSeries]:
    series = host_series(db, host=host, matrix=matrix)
    if series:
        write_output(out, trends_html(series, db=str(database_path(db))))
    return series
