"""TAP version 13 (the Test Anything Protocol, as kvm-unit-tests' and QEMU's test runners emit it).

One test point per case, in case id order, after the plan ``1..N``:

* ``pass``        -> ``ok``;
* ``expected``    -> ``not ok ... # TODO`` with the known issue(s) or host quirk that explain it
  (TAP's "expected failure"), plus YAML diagnostics;
* ``approximate`` -> ``ok ... # SKIP`` (the prediction rested on an approximate model input, so the
  comparison did not check the real thing), with the note saying what was used;
* ``fail`` / ``error`` -> ``not ok`` with a YAML block (``---`` ... ``...``) of diagnostics: message,
  severity, unexpected findings, every differing bit, the ``-cpu`` line, artifacts.

A verdict this module does not know yet is reported ``not ok`` (never silently ok).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _scalar(v: Any) -> str:
    """A YAML scalar: JSON's double-quoted strings, numbers, booleans and null are valid YAML."""
    if isinstance(v, str) and v and all(ch.isalnum() or ch in "-_./:+" for ch in v) and v[0] not in "-:" \
            and v.lower() not in ("yes", "no", "on", "off", "true", "false", "null", "y", "n", "~"):
        try:
            float(v)
        except ValueError:
            return v
    return json.dumps(v, ensure_ascii=False)


def _yaml(d: Mapping[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            if not v:
                out.append(f"{pad}{k}: {{}}")
                continue
            out.append(f"{pad}{k}:")
            out += _yaml(v, indent + 2)
        elif isinstance(v, list):
            if not v:
                out.append(f"{pad}{k}: []")
                continue
            out.append(f"{pad}{k}:")
            for item in v:
                if isinstance(item, Mapping):
                    sub = _yaml(item, indent + 4)
                    out.append(f"{pad}  - {sub[0].lstrip()}")
                    out += sub[1:]
                else:
                    out.append(f"{pad}  - {_scalar(item)}")
        else:
            out.append(f"{pad}{k}: {_scalar(v)}")
    return out


def _desc(text: str) -> str:
    """A test point's description: no ``#`` (it starts a directive) and one line."""
    return " ".join(text.replace("#", "\\#").split())


def _finding(f: Mapping[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {"bit": f["location"], "feature": f["name"], "class": f["class"], "layer": f["layer"],
                         "view": f["view"], "predicted": f.get("predicted"), "configured": f.get("configured"),
                         "observed": dict(f.get("observed") or {})}
    if f.get("issue"):
        d["known_issue"] = f["issue"]["id"]
        d["link"] = f["issue"]["link"]
    return d


def _diagnostics(r: Mapping[str, Any], severity: str, run_dir: Path | None) -> dict[str, Any]:
    c = r["case"]
    msg = "; ".join(r.get("unexpected") or []) or r.get("message") or r["outcome"]
    d: dict[str, Any] = {"message": msg, "severity": severity, "verdict": r["verdict"], "outcome": r["outcome"],
                         "cpu": c.get("cpu", c["model"]), "machine": c["machine"], "accel": c["accel"],
                         "host": c.get("host", "native"), "qemu": r.get("qemu_version") or c.get("qemu")}
    if r.get("unexpected"):
        d["unexpected"] = list(r["unexpected"])
    if r.get("message") and r.get("message") != msg:
        d["note"] = r["message"]
    if r.get("quirk"):
        d["quirk"] = r["quirk"]
    if r.get("outcome_issue"):
        d["outcome_issue"] = r["outcome_issue"]["id"]
    fl = r.get("findings") or []
    if fl:
        notes = sorted({f["note"] for f in fl if f.get("note")})
        if notes:
            d["notes"] = notes
        d["findings"] = [_finding(f) for f in fl]
    if r.get("artifacts"):
        d["artifacts"] = str(run_dir / r["artifacts"]) if run_dir is not None else r["artifacts"]
    d["duration_ms"] = round(float(r.get("duration_s", 0.0)) * 1000)
    return d


def _why_expected(r: Mapping[str, Any]) -> str:
    ids = sorted({f["issue"]["id"] for f in r.get("findings") or [] if f.get("issue")})
    if r.get("outcome_issue"):
        ids.insert(0, r["outcome_issue"]["id"])
    parts = []
    if ids:
        parts.append("known bug " + ", ".join(ids))
    if r.get("quirk") or any(f["class"] == "host-quirk" for f in r.get("findings") or []):
        parts.append("host quirk")
    return "; ".join(parts) or "expected finding"


def tap_lines(results: Sequence[Mapping[str, Any]], *, matrix: str, run_dir: Path | None = None) -> list[str]:
    rows = sorted(results, key=lambda r: r["id"])
    out = ["TAP version 13", f"1..{len(rows)}", f"# rig run of matrix {matrix}: {len(rows)} cases"]
    for n, r in enumerate(rows, 1):
        v = r["verdict"]
        desc = _desc(r["id"])
        if v == "pass":
            out.append(f"ok {n} - {desc}")
            continue
        if v == "approximate":
            why = _desc(r.get("message") or "the prediction rested on an approximate model input")
            out.append(f"ok {n} - {desc} # SKIP approximate: {why}")
            out += ["  ---", *_yaml(_diagnostics(r, "comment", run_dir), 2), "  ..."]
            continue
        if v == "expected":
            out.append(f"not ok {n} - {desc} # TODO {_desc(_why_expected(r))}")
            out += ["  ---", *_yaml(_diagnostics(r, "todo", run_dir), 2), "  ..."]
            continue
        out.append(f"not ok {n} - {desc}")
        out += ["  ---", *_yaml(_diagnostics(r, "error" if v == "error" else "fail", run_dir), 2), "  ..."]
    return out


def tap_report(results: Sequence[Any], *, matrix: str, run_dir: Path | None = None) -> str:
    """TAP13 text of ``results`` (``CaseResult`` objects or their JSON form)."""
    rows = [r if isinstance(r, Mapping) else r.to_json() for r in results]
    return "\n".join(tap_lines(rows, matrix=matrix, run_dir=run_dir)) + "\n"
