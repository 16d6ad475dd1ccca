"""The HTML report: one self-contained page (inline CSS, script and data; no external assets, no server).

Layout: summary counts; filters (verdict, finding class, model, feature name,
new failures); the overview grid of models (rows) x variants (columns, one per
variant x machine x accelerator x host x QEMU x guest combination present),
each cell coloured by verdict and linking to its case, new failures against the
previous run on the same host outlined; then the cases, most severe first, each
led by its bit grids (:mod:`rig.report.page` builds the data).

The page's data is one compact JSON document in a ``<script type="application/json">``
element; the script draws the overview and renders cases in chunks as the list
scrolls into view, so a 2000-case nightly page stays small and opens at once
(``bench/bench_report.py`` measures it).  The template is Jinja2
(``templates/report.html.j2``, with ``report.css`` and ``report.js`` inlined).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from .history_access import PreviousRun
from .page import CLASSES, VERDICTS, ViewsFn, page_data


@cache
def _env() -> Environment:
    return Environment(loader=PackageLoader("rig.report", "templates"), autoescape=select_autoescape(["j2"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@cache
def _asset(name: str) -> str:
    return resources.files("rig.report").joinpath("templates", name).read_text()


def _as_json(r: Any) -> Mapping[str, Any]:
    return r if isinstance(r, Mapping) else r.to_json()


def embed_json(data: Any) -> Markup:
    """JSON safe inside a ``<script>`` element (no ``</``, no ``<!--``)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return Markup(text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


#: where a page's details chunks live, relative to the page
CHUNK_DIR = "report-details"


def chunk_js(n: int, details: Mapping[str, Any]) -> str:
    """A details chunk as the script the page loads on demand (a script, not JSON: pages opened from
    ``file://`` may load scripts beside them but not fetch files)."""
    return f"rigDetails({n},{embed_json(details)});\n"


def html_report(results: Sequence[Any], *, matrix: str, run_dir: str = "", info: dict | None = None,
                views: ViewsFn | None = None, previous: PreviousRun | None = None) -> str:
    """The page for ``results`` (``CaseResult`` objects or their JSON form), everything embedded; ``views``: a
    case's ``views.json`` (for the bit grids: every view; without it, the result's compared words)."""
    return render_report(results, matrix=matrix, run_dir=run_dir, info=info, views=views, previous=previous)[0]


def render_report(results: Sequence[Any], *, matrix: str, run_dir: str = "", info: dict | None = None,
                  views: ViewsFn | None = None, previous: PreviousRun | None = None,
                  inline_budget: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The page and the details chunks it loads from :data:`CHUNK_DIR` (``chunk_js``; none when the case
    details fit in ``inline_budget`` bytes, or without a budget)."""
    rows = [_as_json(r) for r in results]
    info = info or {}
    data, chunks = page_data(rows, views=views, previous=previous.verdicts if previous else None,
                             inline_budget=inline_budget)
    data["chunkDir"] = CHUNK_DIR
    verdicts = Counter(r["verdict"] for r in rows)
    classes = Counter(f["class"] for r in rows for f in r.get("findings", []))
    host = info.get("host") or {}
    host_text = " ".join(str(x) for x in (host.get("hostname"), host.get("cpu_model"),
                                          host.get("kernel") and f"kernel {host.get('kernel')}",
                                          host.get("qemu") and f"QEMU {host.get('qemu')}") if x)
    host_text = host_text or info.get("host_fingerprint") or "?"
    fi = data["fields"].index("new")
    page = _env().get_template("report.html.j2").render(
        matrix=matrix, run_dir=run_dir, info=info, host=host_text, previous=previous, total=len(rows),
        verdict_counts=[(v, verdicts[v]) for v in data["verdicts"] if verdicts[v]],
        known_verdicts=VERDICTS, verdicts=data["verdicts"], classes=data["classes"], models=data["models"],
        class_counts=[(c, classes[c]) for c in data["classes"] if classes[c]],
        outcomes=sorted(Counter(r["outcome"] for r in rows).items()),
        new_failures=sum(1 for c in data["cases"] if c[fi]),
        duration=f"{sum(float(r.get('duration_s', 0)) for r in rows):.1f}",
        css=Markup(_asset("report.css")), js=Markup(_asset("report.js")), data_json=embed_json(data),
        chunked=sum(len(c) for c in chunks), chunk_dir=CHUNK_DIR,
    )
    return page, chunks


__all__ = ["CHUNK_DIR", "CLASSES", "VERDICTS", "chunk_js", "embed_json", "html_report", "render_report"]
