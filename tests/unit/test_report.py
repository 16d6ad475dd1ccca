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


def _page_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="rig-data">(.*?)</script>', page, re.S)
    assert m, "the page embeds its data"
    return json.loads(m.group(1))


def test_html_is_self_contained_with_overview_and_bit_grid_data():
    page = html_report(results(), matrix="smoke", run_dir="/tmp/run")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<link|\ssrc=|@import|url\(", page)  # no external assets
    d = _page_data(page)
    f = {name: i for i, name in enumerate(d["fields"])}
    # overview: rows are models, columns the variant x machine x accel combinations present
    assert d["models"] == ["EPYC-Rome", "Skylake-Server", "host"]
    assert sorted(map(tuple, d["cols"])) == [("microvm / kvm", "default"), ("microvm / tcg", "default"),
                                             ("q35 / tcg", "no-avx2")]
    by = {c[f["id"]].split("-")[0]: c for c in d["cases"]}
    assert d["verdicts"][by["EPYC"][f["verdict"]]] == "fail" and d["verdicts"][by["host"][f["verdict"]]] == "fail"
    assert d["verdicts"][by["Skylake"][f["verdict"]]] == "expected"
    assert [d["feats"][i] for i in by["EPYC"][f["features"]]] == ["avx2"]
    assert by["EPYC"][f["classes"]] == 1 << d["classes"].index("model-gap")
    # the bit grid of 0x7.0.EBX: predicted 00800020, configured 00800000, observed 00000000 (the words above)
    grid = dict(d["details"][by["Skylake"][f["id"]]]["grid"])
    assert [r[:2] for r in grid["0x7.0.ebx"]] == [["predicted", "00800020"], ["configured", "00800000"],
                                                   ["observed", "00000000"]]
    # names for the hover: bit 5 avx2, bit 23 clflushopt (Intel SDM vol. 2A, CPUID leaf 7)
    assert d["names"]["0x7.0.ebx"][5] == "avx2" and d["names"]["0x7.0.ebx"][23] == "clflushopt"
    fd = d["details"][by["Skylake"][f["id"]]]["f"][0]
    assert fd[:3] == ["0x7.0.ebx", 23, "clflushopt"] and d["classes"][fd[4]] == "known-bug"
    assert d["issues"][fd[9]][2] == "https://example.org/bug/1"
    # the aborted case shows its message and what made it fail
    det = d["details"][by["host"][f["id"]]]
    assert "failed to set MSR 0x10a" in det["m"] and det["u"][0].startswith("qemu-aborted")
    # summary counts, server-side
    assert re.search(r"<b>2</b> fail", page) and re.search(r"<b>1</b> expected", page)


def test_html_notes_shared_by_bits_are_stored_once():
    note = "host quirk: PVM passes the outer host's CPUID through"
    fs = [Finding(Location(7, 0, "ebx", b), f"b{b}", "host-quirk", "host-quirk", "guest", 1, 1, {"long64": 0}, None, note)
          for b in range(20)]
    r = judge(CaseResult(Case("native", "system", "kvm", "microvm", "qemu64"), "ok", findings=fs), DEFAULT_FAIL_ON)
    page = html_report([r], matrix="m")
    assert page.count("outer host") == 1
    d = _page_data(page)
    det = d["details"][r.id]
    assert d["notes"] == [note] and det["cn"] == [0] and all(x[10] == 0 for x in det["f"])


def test_html_escapes_script_breakers():
    c = Case("native", "system", "tcg", "microvm", "qemu64")
    r = judge(CaseResult(c, "qemu-aborted", message="</script><script>alert(1)</script>"), DEFAULT_FAIL_ON)
    page = html_report([r], matrix="m<b>")
    assert "</script><script>alert" not in page and "<b>" not in page.split("<body>")[1].split("</h1>")[0]
    assert "alert(1)" in _page_data(page)["details"][r.id]["m"]


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
    assert paths.tap.read_text().startswith("TAP version 13\n1..3\n")


def test_approximate_verdict_in_junit_summary_and_page():
    """`approximate` (a prediction from an approximate model input): skipped in JUnit, counted, shown in its colour."""
    from rig.report.summary import summarise

    r = CaseResult(Case("native", "system", "kvm", "microvm", "EPYC-Milan"), "ok", verdict="approximate",
                   message="predicted with the 6.1 policy (nearest to 6.5): run `rig policy fetch 6.5`")
    rows = [*results(), r]
    suite = ET.fromstring(junit_xml(rows, matrix="m")).find("testsuite")
    assert suite.get("skipped") == "1"
    tc = next(t for t in suite.iter("testcase") if t.get("name") == r.id)
    assert "rig policy fetch 6.5" in tc.find("skipped").get("message")
    assert "1 approximate" in summarise(rows).line()
    page = html_report(rows, matrix="m")
    d = _page_data(page)
    row = next(c for c in d["cases"] if c[0] == r.id)
    assert d["verdicts"][row[1]] == "approximate" and "rig policy fetch 6.5" in d["details"][r.id]["m"]
    assert re.search(r'class="count v-approximate"[^>]*><span class="sw v"></span><b>1</b> approximate', page)


def test_bit_grid_views_kvm_filtered_and_kernel():
    """Every view views.json holds for a case, in order; registers chosen by differences within a view group."""
    from rig.report.page import page_data

    c = Case("emulated:EPYC-Milan@6.1", "system", "kvm", "microvm", "EPYC-Milan", guest="linux")
    # 1.ECX bit 0 is SSE3 (cpuinfo "pni"), bit 20 SSE4.2 ("sse4_2"); 7.0.EBX bit 5 AVX2 (Intel SDM vol. 2A)
    r = judge(CaseResult(c, "ok", words={"0x1.0.ecx": ["00100001", "00100001", "00100001"],
                                         "0x7.0.ebx": ["00000020", "00000020", "00000020"]}), DEFAULT_FAIL_ON)

    def table(ecx: str, ebx: str) -> dict:
        return {"format": "rig-cpuid/1", "entries": [{"leaf": "0x00000001", "subleaf": 0, "ecx": ecx},
                                                     {"leaf": "0x00000007", "subleaf": 0, "ebx": ebx}]}

    views = {"predicted": table("0x00100001", "0x00000020"), "configured": table("0x00100001", "0x00000020"),
             "observed": {"user": table("0x00100001", "0x00000020")},
             "kvm_predicted": table("0x00100001", "0x00000020"), "kvm_measured": table("0x00100001", "0x00000000"),
             "kernel": {"cpuinfo_flags": ["pni", "fpu"]}}
    d, _ = page_data([r.to_json()], views=lambda _: views)
    grid = dict(d["details"][r.id]["grid"])
    # 1.ECX agrees in every guest view and in KVM's pair: no grid; 7.0.EBX: KVM's model and measured table differ
    assert list(grid) == ["0x7.0.ebx"]
    labels = [row[0] for row in grid["0x7.0.ebx"]]
    assert labels == ["predicted", "configured", "observed user", "KVM model", "KVM measured", "kernel /proc/cpuinfo"]
    kernel = grid["0x7.0.ebx"][-1]
    assert kernel[1] == "00000000" and int(kernel[2], 16) >> 5 & 1  # avx2 has a cpuinfo name, not shown: 0
    # the kernel's flags, read back for 1.ECX: pni shown (bit 0), sse4_2 not (bit 20)
    views["kvm_measured"] = table("0x00000001", "0x00000020")
    grid = dict(page_data([r.to_json()], views=lambda _: views)[0]["details"][r.id]["grid"])
    kernel = grid["0x1.0.ecx"][-1]
    assert int(kernel[1], 16) == 1 and int(kernel[2], 16) >> 20 & 1


def test_details_beyond_the_budget_go_to_chunks(tmp_path):
    """Case details past the inline budget are written to report-details/N.js, most severe cases kept inline."""
    rd = RunDir.create(tmp_path / "run", "smoke")
    rd.write_info(RunInfo(matrix="m.toml", matrix_name="smoke", started_at="2026-12-02T00:00:00Z", argv=["rig"]))
    for r in results():
        rd.append(r)
    paths = write_reports(rd, inline_details=450)  # the two fail cases (242 + 142 bytes), not the third
    page = paths.html.read_text()
    d = _page_data(page)
    f = {name: i for i, name in enumerate(d["fields"])}
    chunked = {c[f["id"]]: c[f["chunk"]] for c in d["cases"] if c[f["chunk"]] >= 0}
    assert chunked and set(d["details"]).isdisjoint(chunked) and len(d["details"]) + len(chunked) == 3
    assert "report-details/" in page
    js = (tmp_path / "run" / "report-details" / "0.js").read_text()
    m = re.fullmatch(r"rigDetails\(0,(.*)\);\n", js, re.S)
    assert m and set(json.loads(m.group(1))) == set(chunked)
    # the expected (least severe) case is the one moved out; fail cases stay inline
    verdict = {c[f["id"]]: d["verdicts"][c[f["verdict"]]] for c in d["cases"]}
    assert all(verdict[i] == "expected" for i in chunked)
    # rewritten without a budget: the stale chunks are gone
    write_reports(rd)
    assert not (tmp_path / "run" / "report-details").exists()
