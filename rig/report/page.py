"""The HTML report's data: a compact JSON document the page's script renders.

Built from results in their JSON form (``results.jsonl`` lines, format
``rig-result/1``) and each case's ``views.json``, so the report depends on the
run's files, not on the run machinery's classes.

* ``cases``: one short row per case (id, verdict, model, column, outcome,
  finding classes, feature names as indices into ``feats``, details chunk);
  the overview grid and the filters use these.
* ``cols``: the overview's columns: one per variant x machine x accelerator x
  host x QEMU x guest combination present.
* ``details``: for cases with findings or a verdict other than pass: the bit
  grid (each register that differs, 32 bits per view: predicted, configured,
  observed per CPU mode, the KVM model and measured table, QMP's filtered
  features, the guest kernel's /proc/cpuinfo), the findings (notes shared by
  several bits stored once), messages and known issues.
* ``names``: feature names of the bits of every register a grid shows.

Verdicts and finding classes the page does not know (added later) still show,
in a neutral colour.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..compare.normalise import volatile_mask
from ..cpuid.catalogue import catalogue

#: most severe first (the case list's order)
VERDICTS = ("fail", "error", "approximate", "expected", "pass")
CLASSES = ("model-gap", "qemu-behaviour", "kvm-behaviour", "host-quirk", "known-bug")

Result = Mapping[str, Any]
ViewsFn = Callable[[Result], Mapping[str, Any] | None]


def reg_key(leaf: int, sub: int, reg: str) -> str:
    return f"0x{leaf:x}.{sub}.{reg.lower()}"


def _parse_key(key: str) -> tuple[int, int, str]:
    leaf, sub, reg = key.split(".")
    return int(leaf, 16), int(sub), reg


def _table(t: Any) -> dict[str, int] | None:
    """A ``rig-cpuid/1`` table from views.json as register key -> value (volatile fields cleared)."""
    if not isinstance(t, Mapping) or not isinstance(t.get("entries"), list):
        return None
    out: dict[str, int] = {}
    for row in t["entries"]:
        leaf, sub = int(str(row["leaf"]), 16), int(row.get("subleaf", 0))
        for reg in ("eax", "ebx", "ecx", "edx"):
            if row.get(reg) is not None:
                v = int(str(row[reg]), 16)
                out[reg_key(leaf, sub, reg)] = v & ~volatile_mask(leaf, sub, reg)
    return out


def _kernel_row(views: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    """The guest kernel's /proc/cpuinfo flags as bits of ``key``: (value, mask of bits with a flag name)."""
    k = views.get("kernel")
    flags = (k or {}).get("cpuinfo_flags") if isinstance(k, Mapping) else None
    if flags is None:
        return None
    flags = set(flags)
    leaf, sub, reg = _parse_key(key)
    val = mask = 0
    for f in catalogue().in_word(leaf, sub, reg):
        if f.cpuinfo:
            mask |= 1 << f.bit
            if f.cpuinfo in flags:
                val |= 1 << f.bit
    return (val, mask) if mask else None


def _views_of(views: Mapping[str, Any] | None, words: Mapping[str, Sequence[str | None]]) -> list[tuple[str, dict]]:
    """(view label, register key -> value) of a case, in display order; from ``words`` when views.json is gone."""
    if views is None:
        out: list[tuple[str, dict]] = [("predicted", {}), ("configured", {}), ("observed", {})]
        for key, vals in words.items():
            for (_, t), v in zip(out, vals, strict=False):
                if v is not None:
                    t[key] = int(v, 16)
        return [(n, t) for n, t in out if t]
    out = []
    for label, name in (("predicted", "predicted"), ("configured", "configured")):
        t = _table(views.get(name))
        if t is not None:
            out.append((label, t))
    for mode, t in sorted((views.get("observed") or {}).items()):
        tt = _table(t)
        if tt is not None:
            out.append((f"observed {mode}", tt))
    for label, name in (("KVM model", "kvm_predicted"), ("KVM measured", "kvm_measured"),
                        ("filtered (model)", "predicted_filtered"), ("filtered (QMP)", "filtered")):
        t = _table(views.get(name))
        if t is not None:
            out.append((label, t))
    return out


#: views compared with each other to find the registers that differ (the KVM and filtered pairs among themselves)
_GUEST_VIEWS = ("predicted", "configured", "observed")


def _grid(r: Result, views: Mapping[str, Any] | None) -> list[list[Any]]:
    """[register key, [[view label, value or null, mask or null], ...]] for every register that differs."""
    words = r.get("words") or {}
    tables = _views_of(views, words)
    scope = list(words) or [k for label, t in tables if label in ("predicted", "configured") for k in t]
    finding_regs = [reg_key(int(f["leaf"]), int(f["subleaf"]), f["reg"]) for f in r.get("findings", [])]
    keys: list[str] = []
    for key in [*scope, *finding_regs]:
        if key in keys:
            continue
        guest = {t[key] for label, t in tables if label.split()[0] in _GUEST_VIEWS and key in t}
        pairs = [{t[key] for label, t in tables if label.startswith(p) and key in t} for p in ("KVM", "filtered")]
        if len(guest) > 1 or any(len(p) > 1 for p in pairs) or key in finding_regs:
            keys.append(key)
    grid = []
    for key in sorted(keys, key=_parse_key):
        rows: list[list[Any]] = [[label, f"{t[key]:08x}", None] for label, t in tables if key in t]
        if views is not None and (kr := _kernel_row(views, key)) is not None:
            rows.append(["kernel /proc/cpuinfo", f"{kr[0]:08x}", f"{kr[1]:08x}"])
        grid.append([key, rows])
    return grid


def _details(r: Result, views: Mapping[str, Any] | None, issues: dict[str, int], notes: dict[str, int],
             classes: list[str]) -> dict:
    findings = []
    note_count: dict[str, int] = {}
    for f in r.get("findings", []):
        if f.get("note"):
            note_count[f["note"]] = note_count.get(f["note"], 0) + 1
    case_notes = [n for n, c in note_count.items() if c > 1]
    for f in r.get("findings", []):
        iss = f.get("issue")
        ii = None
        if iss:
            ii = issues.setdefault(f"{iss['id']}\0{iss['title']}\0{iss['link']}", len(issues))
        note = f.get("note") or ""
        ni = notes.setdefault(note, len(notes)) if note else None
        findings.append([reg_key(int(f["leaf"]), int(f["subleaf"]), f["reg"]), int(f["bit"]), f["name"], f["view"],
                         classes.index(f["class"]), f["layer"], f.get("predicted"), f.get("configured"), f.get("observed") or {},
                         ii, ni])
    d: dict[str, Any] = {"grid": _grid(r, views), "f": findings}
    if case_notes:
        d["cn"] = [notes[n] for n in case_notes]
    oi = r.get("outcome_issue")
    if oi:
        d["oi"] = issues.setdefault(f"{oi['id']}\0{oi['title']}\0{oi['link']}", len(issues))
    for k, src in (("m", "message"), ("q", "quirk")):
        if r.get(src):
            d[k] = r[src]
    if r.get("unexpected"):
        d["u"] = list(r["unexpected"])
    return d


def _column(c: Mapping[str, Any]) -> tuple[str, str]:
    """(combination, variant) of a case: the overview column's two header levels."""
    parts = [c["machine"], c["accel"]]
    if c.get("host", "native") != "native":
        parts.append(c["host"])
    if c.get("qemu", "system") != "system":
        parts.append("qemu " + str(c["qemu"]))
    if c.get("guest", "probe") != "probe":
        parts.append(str(c["guest"]))
    return " / ".join(parts), c.get("variant", "default")


def _needs_details(r: Result) -> bool:
    if r.get("findings") or r.get("verdict") != "pass" or r.get("case", {}).get("guest", "probe") != "probe":
        return True
    # a pass with differing words (a runtime bit, say) is worth its grid too
    return any(len({v for v in vals if v is not None}) > 1 for vals in (r.get("words") or {}).values())


def _size(x: Any) -> int:
    return len(json.dumps(x, separators=(",", ":"), ensure_ascii=False).encode())


def page_data(results: Iterable[Result], *, views: ViewsFn | None = None, previous: Mapping[str, str] | None = None,
              inline_budget: int | None = None, chunk_cases: int = 100) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The page's JSON document and the case details kept out of it.

    ``previous``: case id -> verdict of the previous run on this host.  ``inline_budget``: bytes of case
    details embedded in the page (None: all); the details of the cases after them, in the page's order (most
    severe first), go into chunks of ``chunk_cases`` cases that the page loads when it shows one of them
    (``report-details/N.js`` beside the page, :func:`rig.report.html.render_report`)."""
    results = sorted(results, key=lambda r: r["id"])
    models = sorted({r["case"]["model"] for r in results})
    model_ix = {m: i for i, m in enumerate(models)}
    combos = sorted({_column(r["case"]) for r in results}, key=lambda cv: (cv[0], cv[1] != "default", cv[1]))
    col_ix = {cv: i for i, cv in enumerate(combos)}
    verdicts = [*VERDICTS, *sorted({r["verdict"] for r in results} - set(VERDICTS))]
    classes = [*CLASSES, *sorted({f["class"] for r in results for f in r.get("findings", [])} - set(CLASSES))]
    issues: dict[str, int] = {}
    notes: dict[str, int] = {}
    feats: dict[str, int] = {}
    cases, details = [], {}
    regs: set[str] = set()
    for r in results:
        c = r["case"]
        fl = r.get("findings", [])
        cls_mask = 0
        for f in fl:
            cls_mask |= 1 << classes.index(f["class"])
        new = 0
        if previous is not None and r["verdict"] in ("fail", "error"):
            was = previous.get(r["id"])
            new = 2 if was is None else (1 if was not in ("fail", "error") else 0)
        row = [r["id"], verdicts.index(r["verdict"]), model_ix[c["model"]], col_ix[_column(c)], r["outcome"],
               len(fl), cls_mask, [feats.setdefault(n, len(feats)) for n in sorted({f["name"] for f in fl})],
               c.get("cpu", ""), new, round(float(r.get("duration_s", 0.0)), 2), r.get("artifacts", ""), -1]
        cases.append(row)
        if _needs_details(r):
            d = _details(r, views(r) if views else None, issues, notes, classes)
            details[r["id"]] = d
            regs.update(k for k, _ in d["grid"])
    cat = catalogue()
    names = {}
    for key in sorted(regs):
        leaf, sub, reg = _parse_key(key)
        names[key] = [cat.name_of(leaf, sub, reg, b) if cat.by_location(leaf, sub, reg, b) else "" for b in range(32)]
    chunks: list[dict[str, Any]] = []
    if inline_budget is not None and _size(details) > inline_budget:
        # the page's own order: verdict (most severe first), new failures first, id
        order = sorted(cases, key=lambda row: (row[1], -row[9], row[0]))
        used, inline = 0, {}
        rest = []
        for row in order:
            d = details.get(row[0])
            if d is None:
                continue
            n = _size(d)
            if not rest and used + n <= inline_budget:
                inline[row[0]] = d
                used += n
            else:
                rest.append(row)
        for i in range(0, len(rest), chunk_cases):
            chunk = {}
            for row in rest[i:i + chunk_cases]:
                row[-1] = len(chunks)
                chunk[row[0]] = details[row[0]]
            chunks.append(chunk)
        details = inline
    return {
        "verdicts": verdicts, "classes": classes, "models": models,
        "cols": [list(cv) for cv in combos], "cases": cases, "details": details, "names": names,
        "issues": [k.split("\0") for k in issues], "notes": list(notes), "feats": list(feats),
        "fields": ["id", "verdict", "model", "col", "outcome", "findings", "classes", "features", "cpu", "new",
                   "duration_s", "artifacts", "chunk"],
    }, chunks
