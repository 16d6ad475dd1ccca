"""``rig fleet report``: one self-contained HTML page of a nightly, host classes x CPU models.

Each cell counts the model's cases in that class by verdict and is coloured by the
worst; the regressions against each class's previous nightly of the same matrix
(a case whose verdict got worse, or that is new failing) are listed first.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict

from ..history.db import History
from .store import FleetStore, Nightly, utc

ORDER = ("error", "missing", "fail", "expected", "pass")
RANK = {v: i for i, v in enumerate(ORDER)}
COLOUR = {"error": "#b71c1c", "missing": "#757575", "fail": "#e53935", "expected": "#fbc02d", "pass": "#43a047"}


def regressions(history: History, n: Nightly) -> list[tuple[str, str, str, str]]:
    """(class, case, previous verdict, verdict) for every case that got worse since the class's previous nightly."""
    out = []
    for row in history.nightly_runs(n.id):
        prev = history.previous(row)
        if prev is None:
            continue
        old, new = history._results(prev.id), history._results(row.id)
        for cid, (_o, v, _w) in sorted(new.items()):
            was = old.get(cid, (None, "pass", None))[1]
            if RANK.get(v, 0) < RANK.get(was, 0) and v in ("error", "missing", "fail"):
                out.append((row.host_class or row.host_key, cid, was if cid in old else "(new)", v))
    return out


def fleet_html(store: FleetStore, n: Nightly) -> str:
    rows = store.results(n.id)
    cells: dict[tuple[str, str], Counter] = defaultdict(Counter)
    models: set[str] = set()
    classes = store.classes(n.id)
    for r in rows:
        model = (r["result"] or {}).get("case", {}).get("model") or r["case_id"].split("-")[0]
        models.add(model)
        cells[(r["host_class"], model)][r["verdict"]] += 1
    e = html.escape
    regs = regressions(store.history, n)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>fleet nightly {e(n.id)}</title><style>"
             "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:2px 6px;font-size:12px}th{background:#eee}td.c{color:#fff;text-align:center}"
             "</style></head><body>",
             f"<h1>Fleet nightly {e(n.id)}</h1><p>matrix {e(n.matrix)}; created {utc(n.created_at)}; "
             f"closed {utc(n.closed_at) if n.closed_at else 'not yet'}; {len(classes)} host classes, {len(rows)} results</p>",
             f"<h2>Regressions against each class's previous nightly ({len(regs)})</h2>"]
    if regs:
        parts.append("<table><tr><th>host class</th><th>case</th><th>before</th><th>now</th></tr>")
        parts += [f"<tr><td>{e(c)}</td><td>{e(cid)}</td><td>{e(a)}</td><td style='background:{COLOUR.get(b, '#fff')};"
                  f"color:#fff'>{e(b)}</td></tr>" for c, cid, a, b in regs]
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append("<h2>Host classes &times; models</h2><table><tr><th>model</th>" +
                 "".join(f"<th>{e(c)}</th>" for c in classes) + "</tr>")
    for m in sorted(models):
        parts.append(f"<tr><th>{e(m)}</th>")
        for c in classes:
            cnt = cells.get((c, m))
            if not cnt:
                parts.append("<td></td>")
                continue
            worst = min(cnt, key=lambda v: RANK.get(v, 0))
            title = ", ".join(f"{k} {v}" for k, v in sorted(cnt.items()))
            parts.append(f"<td class='c' style='background:{COLOUR.get(worst, '#999')}' title='{e(title)}'>"
                         f"{e(title)}</td>")
        parts.append("</tr>")
    parts.append("</table><h2>Events</h2><ul>")
    parts += [f"<li>{utc(ev['at'])} {e(ev['kind'])} {e(ev['host_class'])} {e(ev['detail'])}</li>"
              for ev in store.events(n.id)]
    parts.append("</ul></body></html>")
    return "\n".join(parts)
