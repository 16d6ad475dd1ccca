"""Reports: JUnit XML that CI parsers read, JSON, a self-contained HTML report with differing bits and a bit grid."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from rig.cpuid.table import Location
from rig.report.html import html_report
from rig.report.junit import junit_xml
from rig.report.write import write_reports
from rig.results import DEFAULT_FAIL_ON, Case, CaseResult, Finding, IssueRef, judge
from rig.run.rundir import RunDir, RunInfo


def results() -> list[CaseResult]:
    c1 = Case("native", "system", "tcg", "microvm", "Skylake-Server")
    c2 = Case("native", "system", "tcg", "q35", "EPYC-Rome", "no-avx2", ("-avx2",))
    c3 = Case("native", "system", "kvm", "microvm", "host")
    # 7.0.EBX bit 5 is avx2, bit 23 clflushopt (Intel SDM vol. 2A, CPUID leaf 7)
    gap = Finding(Location(7, 0, "ebx", 5), "avx2", "model-gap", "model-gap", "guest", 1, 0, {"long64": 0, "prot32": 0})
    bug = Finding(Location(7, 0, "ebx", 23), "clflushopt", "known-bug", "qemu-behaviour", "guest", 1, 1, {"long64": 0},
                  IssueRef("mvm-clflushopt", "microvm hides clflushopt", "https://example.org/bug/1"))
    words = {"0x7.0.ebx": ["00800020", "00800000", "00000000"]}
    return [
        judge(CaseResult(c1, "ok", findings=[bug], words=words, duration_s=0.1), DEFAULT_FAIL_ON),
        judge(CaseResult(c2, "ok", findings=[gap], words=words, duration_s=0.2), DEFAULT_FAIL_ON),
        judge(CaseResult(c3, "qemu-aborted", message="QEMU killed by SIGABRT: failed to set MSR 0x10a"), DEFAULT_FAIL_ON),
    ]


def test_junit_counts_and_messages():
    root = ET.fromstring(junit_xml(results(), matrix="smoke"))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "2"
    cases = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert len(cases) == 3
    gap = next(tc for n, tc in cases.items() if n.startswith("EPYC-Rome-no-avx2"))
    assert gap.find("failure").get("message") == "model-gap: avx2 0x7.0.EBX[5]"
    ok = next(tc for n, tc in cases.items() if n.startswith("Skylake"))
    assert ok.find("failure") is None
    assert "mvm-clflushopt: https://example.org/bug/1" in ok.find("system-out").text
    host = next(tc for n, tc in cases.items() if n.startswith("host"))
    assert "failed to set MSR 0x10a" in host.find("failure").get("message")


def test_html_is_self_contained_and_names_bits():
    page = html_report(results(), matrix="smoke", run_dir="/tmp/run")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|src=", page)  # no external assets, no script
    assert "avx2" in page and "0x7.0.EBX[5]" in page and "model-gap" in page
    assert 'href="https://example.org/bug/1"' in page
    # the bit grid: one row of 32 cells for 0x7.0.ebx, bit 23 differs guest vs QEMU, bit 5 prediction vs QEMU
    row = re.search(r"<tr><th>0x7\.0\.ebx</th>(.*?)</tr>", page).group(1)
    cells = re.findall(r'<td class="(\w+)" title="([^"]*)"', row)
    assert len(cells) == 32
    by_bit = {31 - i: c for i, c in enumerate(cells)}
    assert by_bit[23][0] == "dco" and "clflushopt: P=1 C=1 O=0" in by_bit[23][1]
    assert by_bit[5][0] == "dpc" and "avx2: P=1 C=0 O=0" in by_bit[5][1]  # only the prediction differs
    assert by_bit[0][0] == "b0"


def test_write_reports(tmp_path):
    rd = RunDir.create(tmp_path / "run", "smoke")
    rd.write_info(RunInfo(matrix="m.toml", matrix_name="smoke", started_at="2026-12-02T00:00:00Z", argv=["rig"]))
    for r in results():
        rd.append(r)
    paths = write_reports(rd)
    data = json.loads(paths.json.read_text())
    assert data["summary"]["total"] == 3 and data["summary"]["verdicts"] == {"expected": 1, "fail": 2}
    assert data["summary"]["classes"] == {"known-bug": 1, "model-gap": 1}
    assert ET.parse(paths.junit).getroot().tag == "testsuites"
    assert "rig report: smoke" in paths.html.read_text()
