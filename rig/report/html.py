"""Self-contained HTML report: summary, case table, differing bits per case, and a bit grid.

No external assets: CSS is inline, there is no script (``<details>`` folds the
per-case sections).  The bit grid shows each compared register as 32 cells,
bit 31 on the left; a cell's colour says how predicted (P), configured (C) and
observed (O) agree, and its tooltip names the feature and the three values.
Bit grids are drawn for cases with findings (at most ``max_grids``), so the
nightly report stays small.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ..cpuid.catalogue import catalogue
from ..run.result import CaseResult
from .summary import summarise

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
.pass{color:#1a7f37}.approximate{color:#9a6700}.expected{color:#9a6700}.fail{color:#cf222e;font-weight:bold}.error{color:#8250df;font-weight:bold}
.num{text-align:right}
code{font:12px ui-monospace,monospace}
details{margin:.4em 0;border:1px solid #ddd;padding:.3em .6em}
summary{cursor:pointer}
table.grid td{width:14px;height:14px;padding:0;border:1px solid #fff;font:9px monospace;text-align:center}
table.grid th{font:11px ui-monospace,monospace;background:#fff;border:none;padding-right:6px}
td.b0{background:#eee}td.b1{background:#4a7bd0;color:#fff}
td.dpc{background:#f0a020}td.dco{background:#e03030;color:#fff}td.dall{background:#8b0000;color:#fff}
td.unk{background:#fff;border:1px dashed #ccc}
.legend span{display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 4px 0 10px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _bit(v: str | None, bit: int) -> int | None:
    return None if v is None else (int(v, 16) >> bit) & 1


def _grid(r: CaseResult) -> str:
    cat = catalogue()
    rows = []
    head = "".join(f"<th>{b}</th>" if b % 4 == 0 else "<th></th>" for b in range(31, -1, -1))
    for key, (p, c, o) in sorted(r.words.items()):
        leaf_s, sub_s, reg = key.split(".")
        leaf, sub = int(leaf_s, 16), int(sub_s)
        cells = []
        for bit in range(31, -1, -1):
            pb, cb, ob = _bit(p, bit), _bit(c, bit), _bit(o, bit)
            known = [x for x in (pb, cb, ob) if x is not None]
            if not known:
                cls, txt = "unk", ""
            elif len(set(known)) == 1:
                cls, txt = f"b{known[0]}", ""
            elif cb is not None and ob is not None and cb != ob:
                cls, txt = ("dall" if pb is not None and pb != ob and pb != cb else "dco"), "!"
            else:
                cls, txt = "dpc", "?"
            name = cat.name_of(leaf, sub, reg, bit)
            tip = f"{key.upper()}[{bit}] {name}: P={'-' if pb is None else pb} C={'-' if cb is None else cb} O={'-' if ob is None else ob}"
            cells.append(f'<td class="{cls}" title="{_e(tip)}">{txt}</td>')
        rows.append(f"<tr><th>{_e(key)}</th>{''.join(cells)}</tr>")
    legend = ('<p class="legend">'
              '<span class="b1"></span>1 everywhere<span class="b0"></span>0 everywhere'
              '<span class="dpc"></span>prediction differs from QEMU'
              '<span class="dco"></span>guest differs from QEMU'
              '<span class="dall"></span>all differ</p>')
    return f'{legend}<table class="grid"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _findings_table(r: CaseResult) -> str:
    if not r.findings:
        return "<p>No differing bits.</p>"
    modes = sorted({m for f in r.findings for m in f.observed})
    head = "".join(f"<th>observed ({_e(m)})</th>" for m in modes)
    rows = []
    for f in r.findings:
        obs = "".join(f"<td>{_e(f.observed.get(m, '-'))}</td>" for m in modes)
        issue = f'<a href="{_e(f.issue.link)}">{_e(f.issue.id)}</a>' if f.issue else ""
        cls = "fail" if any(u.startswith(f.cls + ":") and f.name in u for u in r.unexpected) else "expected"
        rows.append(
            f"<tr><td><code>{_e(f.location)}</code></td><td>{_e(f.name)}</td><td>{_e(f.view)}</td>"
            f"<td>{_e('-' if f.predicted is None else f.predicted)}</td><td>{_e('-' if f.configured is None else f.configured)}</td>"
            f'{obs}<td class="{cls}">{_e(f.cls)}</td><td>{_e(f.layer)}</td><td>{issue}</td><td>{_e(f.note)}</td></tr>'
        )
    return ("<table><tr><th>bit</th><th>feature</th><th>view</th><th>predicted</th><th>configured</th>"
            f"{head}<th>class</th><th>layer</th><th>known issue</th><th>note</th></tr>{''.join(rows)}</table>")


def html_report(results: Sequence[CaseResult], *, matrix: str, run_dir: str = "", info: dict | None = None,
                max_grids: int = 200) -> str:
    s = summarise(results)
    ordered = sorted(results, key=lambda r: ({"fail": 0, "error": 1, "expected": 2, "approximate": 3, "pass": 4}.get(r.verdict, 5), r.id))
    info = info or {}
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rig report: {_e(matrix)}</title><style>{CSS}</style></head><body>",
        f"<h1>rig report: {_e(matrix)}</h1>",
        f"<p>Run directory <code>{_e(run_dir)}</code>; started {_e(info.get('started_at', '?'))}; "
        f"host {_e(info.get('host_fingerprint') or '?')}.</p>",
        '<h2 id="summary">Summary</h2><table>',
        f"<tr><th>cases</th><td class=num>{s.total}</td></tr>",
    ]
    for v in ("pass", "approximate", "expected", "fail", "error"):
        out.append(f'<tr><th class="{v}">{v}</th><td class=num>{s.verdicts[v]}</td></tr>')
    out.append("</table><table><tr><th>outcome</th><th>cases</th></tr>")
    out += [f"<tr><td>{_e(o)}</td><td class=num>{n}</td></tr>" for o, n in sorted(s.outcomes.items())]
    out.append("</table><table><tr><th>finding class</th><th>bits</th></tr>")
    out += [f"<tr><td>{_e(c)}</td><td class=num>{n}</td></tr>" for c, n in sorted(s.classes.items())]
    out.append("</table>")
    out.append('<h2 id="cases">Cases</h2><table><tr><th>case</th><th>-cpu</th><th>machine</th><th>accel</th>'
               "<th>outcome</th><th>verdict</th><th>findings</th><th>time (s)</th></tr>")
    for r in ordered:
        link = f'<a href="#c-{_e(r.id)}">{_e(r.id)}</a>' if (r.findings or r.verdict != "pass") else _e(r.id)
        out.append(f"<tr><td>{link}</td><td><code>{_e(r.case.cpu_arg)}</code></td><td>{_e(r.case.machine)}</td>"
                   f"<td>{_e(r.case.accel)}</td><td>{_e(r.outcome)}</td><td class=\"{r.verdict}\">{r.verdict}</td>"
                   f"<td class=num>{len(r.findings)}</td><td class=num>{r.duration_s:.2f}</td></tr>")
    out.append("</table>")
    out.append('<h2 id="details">Cases with findings</h2>')
    grids = 0
    for r in ordered:
        if not r.findings and r.verdict == "pass":
            continue
        opened = " open" if r.verdict in ("fail", "error") else ""
        out.append(f'<details id="c-{_e(r.id)}"{opened}><summary><b>{_e(r.id)}</b> '
                   f'<span class="{r.verdict}">{r.verdict}</span> ({_e(r.outcome)}, {len(r.findings)} bits)</summary>')
        out.append(f"<p><code>-cpu {_e(r.case.cpu_arg)} -M {_e(r.case.machine)} -accel {_e(r.case.accel)}</code>"
                   f" host {_e(r.case.host)}; artifacts <code>{_e(r.artifacts)}</code></p>")
        if r.message:
            out.append(f"<p>{_e(r.message)}</p>")
        for a in r.approximations:
            out.append(f'<p class="approximate">APPROXIMATE: {_e(a)}</p>')
        if r.unexpected:
            out.append("<ul>" + "".join(f'<li class="fail">{_e(u)}</li>' for u in r.unexpected) + "</ul>")
        if r.outcome_issue:
            out.append(f'<p>Known outcome: <a href="{_e(r.outcome_issue.link)}">{_e(r.outcome_issue.id)}</a> '
                       f"{_e(r.outcome_issue.title)}</p>")
        if r.quirk:
            out.append(f"<p>Host quirk: {_e(r.quirk)}</p>")
        out.append(_findings_table(r))
        if r.words and grids < max_grids:
            grids += 1
            out.append("<h3>Bit grid</h3>" + _grid(r))
        out.append("</details>")
    out.append("</body></html>")
    return "\n".join(out)


def case_html(r: CaseResult) -> str:
    """One case on its own (``rig report --case``): findings and bit grid."""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(r.id)}</title>"
            f"<style>{CSS}</style></head><body><h1>{_e(r.id)}</h1>"
            f"<p><code>-cpu {_e(r.case.cpu_arg)} -M {_e(r.case.machine)} -accel {_e(r.case.accel)}</code> "
            f'outcome {_e(r.outcome)}, verdict <span class="{r.verdict}">{r.verdict}</span></p>'
            f"{_findings_table(r)}<h2>Bit grid</h2>{_grid(r)}</body></html>")
