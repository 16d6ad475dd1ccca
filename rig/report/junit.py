"""JUnit XML (the schema Jenkins/GitLab read): one ``<testcase>`` per case.

``fail`` verdicts become ``<failure>`` (message: the unexpected findings),
``error`` verdicts ``<error>``; expected findings are listed in ``<system-out>``
so they are visible without failing the job; ``approximate`` verdicts pass with a
``verdict`` property and the approximation sentences in ``<system-out>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ..run.result import CaseResult
from .summary import summarise


def _classname(matrix: str, r: CaseResult) -> str:
    return ".".join(p.replace(".", "_") for p in ("rig", matrix, r.case.group or "cases"))


def junit_xml(results: Sequence[CaseResult], *, matrix: str, run_dir: Path | None = None) -> bytes:
    s = summarise(results)
    suite = ET.Element("testsuite", {
        "name": f"rig.{matrix}", "tests": str(s.total), "failures": str(s.verdicts["fail"]),
        "errors": str(s.verdicts["error"]), "skipped": "0", "time": f"{s.duration_s:.3f}",
    })
    for r in sorted(results, key=lambda r: r.id):
        tc = ET.SubElement(suite, "testcase", {"classname": _classname(matrix, r), "name": r.id,
                                               "time": f"{r.duration_s:.3f}"})
        if r.verdict == "fail":
            el = ET.SubElement(tc, "failure", {"message": "; ".join(r.unexpected)[:1000], "type": "unexpected-finding"})
            el.text = "\n".join(r.unexpected)
        elif r.verdict == "error":
            el = ET.SubElement(tc, "error", {"message": r.message[:1000] or "rig error", "type": "rig-error"})
            el.text = r.message
        if r.verdict == "approximate":
            props = ET.SubElement(tc, "properties")
            ET.SubElement(props, "property", {"name": "verdict", "value": "approximate"})
        lines = [f"case: {r.case.cpu_arg} machine={r.case.machine} accel={r.case.accel} outcome={r.outcome}"]
        lines += [f"APPROXIMATE: {a}" for a in r.approximations]
        if run_dir is not None and r.artifacts:
            lines.append(f"artifacts: {run_dir / r.artifacts}")
        for f in r.findings:
            extra = f" [{f.issue.id}: {f.issue.link}]" if f.issue else ""
            obs = ",".join(f"{m}={v}" for m, v in f.observed.items())
            lines.append(f"{f.cls} ({f.layer}) {f.name} {f.location}: predicted={f.predicted} "
                         f"configured={f.configured} observed={obs or '-'}{extra}")
        if r.outcome_issue:
            lines.append(f"known outcome {r.outcome}: {r.outcome_issue.id} {r.outcome_issue.link}")
        ET.SubElement(tc, "system-out").text = "\n".join(lines)
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
