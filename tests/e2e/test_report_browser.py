"""The HTML report in a real browser (Debian's headless Chromium, driven over the DevTools protocol).

Two real runs: the smoke matrix (every case passes) and a findings-heavy matrix: Opteron_G4 under TCG without
the known-issues file (QEMU's TCG CR4.OSXSAVE bug becomes unexpected ``qemu-behaviour`` findings: fail), and,
where /dev/kvm is usable, KVM cases (on the PVM /dev/kvm of the development machines every register the guest
reads is the outer host's: dozens of ``host-quirk`` bits per case sharing one note).  The checks read the
rendered DOM against the run's own results.jsonl: overview cells and their colours, bit grids, the filters,
chunked rendering and navigation from the overview.  Screenshots are kept in ``$RIG_TEST_ARTIFACTS`` (default
``out/test-artifacts/`` in the repository) and beside each report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rig.report.headless import Browser, find_chromium

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RIG_TEST_ARTIFACTS", REPO / "out" / "test-artifacts")) / "report-browser"

FINDINGS = """
[matrix]
name = "findings"
[defaults]
machines = ["microvm"]
timeout = 30
[[group]]
name = "tcg"
accels = ["tcg"]
models = ["Opteron_G4", "qemu64"]
variants = [ { name = "default" }, { name = "no-xsaveopt", flags = ["xsaveopt=off"] } ]
"""
KVM_GROUP = """
[[group]]
name = "kvm"
accels = ["kvm"]
models = ["qemu64", "EPYC-Rome"]
variants = [ { name = "default" }, { name = "no-sse4.2", flags = ["sse4.2=off"] } ]
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium on PATH: scripts/setup.sh installs Debian's chromium package")
    return path


def _run(matrix: Path, out: Path, *args: str) -> tuple[list[dict], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(matrix), "--out", str(out), "--no-history",
                        "--jobs", "2", *args], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    assert (out / "report.html").exists(), p.stderr[-3000:]
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()], p.stdout


@pytest.fixture(scope="module")
def smoke_tap(tmp_path_factory, qemu_binary):
    """The smoke matrix run with --tap: (run directory, results, stdout)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    return out, *_run(REPO / "matrices" / "smoke.toml", out, "--tap")


@pytest.fixture(scope="module")
def smoke(smoke_tap):
    return smoke_tap[:2]


@pytest.fixture(scope="module")
def findings(tmp_path_factory, qemu_binary):
    d = tmp_path_factory.mktemp("findings")
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    (d / "m.toml").write_text(FINDINGS + (KVM_GROUP if kvm else ""))
    return d / "run", _run(d / "m.toml", d / "run")[0], kvm


def _keep(shot: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)


def _settle(b: Browser, ms: int = 100) -> None:
    """Let the page run its pending tasks (a form reset applies after the reset event)."""
    b.eval(f"new Promise(r => setTimeout(r, {ms}))")


def _shown(b: Browser) -> list[str]:
    """The cases the list shows (rendered so far)."""
    _settle(b)
    return b.eval("Array.from(document.querySelectorAll('#list .case')).map(e => e.id.slice(2))")


def _matching(b: Browser) -> list[str]:
    """Every case the filters let through: the list rendered to its end (its 'more' link clicked)."""
    _settle(b)
    b.eval("(function(){var m = document.getElementById('more'); for (var i = 0; i < 1000 && m.textContent; i++)"
           " m.click();})()")
    return _shown(b)


def test_smoke_report_overview_and_filters(chromium, smoke):
    out, rows = smoke
    with Browser(chromium) as b:
        b.open(out / "report.html")
        assert b.eval("document.documentElement.dataset.ready") == "1"
        cells = b.eval("Array.from(document.querySelectorAll('#ov-grid td.cell')).map(td => "
                       "[td.dataset.case, td.className, td.querySelector('a').getAttribute('href')])")
        assert len(cells) == len(rows) == 24
        verdict = {r["id"]: r["verdict"] for r in rows}
        for case, cls, href in cells:
            assert f"v-{verdict[case]}" in cls.split() and href == f"#c-{case}"
        # the overview's rows are the models, its columns the variants per machine/accelerator
        assert b.eval("Array.from(document.querySelectorAll('#ov-grid tbody th')).map(t => t.textContent)") == \
            sorted({r["case"]["model"] for r in rows})
        assert b.eval("document.querySelectorAll('#ov-grid thead tr:nth-child(2) th span').length") == \
            len({(r["case"]["variant"], r["case"]["machine"]) for r in rows})
        assert b.eval("document.querySelector('#summary').textContent.replace(/\\s+/g, ' ')").strip().startswith(
            f"{len(rows)} cases")
        shot = b.screenshot(out / "overview-smoke.png")
        # filter by model: a real selection in the <select>
        b.eval("var s = document.querySelector('select[name=model]'); "
               "s.value = Array.from(s.options).find(o => o.text === 'qemu64').value; "
               "s.dispatchEvent(new Event('change', {bubbles: true}))")
        want = sorted(r["id"] for r in rows if r["case"]["model"] == "qemu64")
        assert sorted(_shown(b)) == want
        assert b.eval("document.querySelectorAll('#ov-grid td.cell.dim').length") == len(rows) - len(want)
        # filter by feature name, typed: no smoke case has a finding, so nothing matches
        b.type("input[name=feature]", "osxsave")
        assert _shown(b) == [] and "0 of 24" in b.eval("document.getElementById('shown').textContent")
        b.click("button[type=reset]")
        assert len(_matching(b)) == 24
    _keep(shot)


def test_findings_report_bit_grids_filters_and_lazy_cases(chromium, findings):
    out, rows, kvm = findings
    by_id = {r["id"]: r for r in rows}
    fails = sorted(r["id"] for r in rows if r["verdict"] == "fail")
    assert fails, "Opteron_G4 under TCG without the known issue must fail (QEMU's CR4.OSXSAVE bug)"
    with Browser(chromium, height=1100) as b:
        b.open(out.joinpath("report.html").resolve().as_uri() + "?chunk=3")
        # chunks: 3 cases first, more as the list scrolls into view
        assert len(_shown(b)) == 3
        b.eval("document.getElementById('more').scrollIntoView()")
        _settle(b, 300)
        assert len(_shown(b)) > 3
        # fail cases come first, each led by its bit grid; OSXSAVE is 0x1.ECX[27] (Intel SDM vol. 2A, CPUID leaf 1)
        assert _shown(b)[:len(fails)] == fails
        for cid in fails:
            cell = b.eval(f"(function(){{var t = document.getElementById('c-{cid}').querySelector('table.bits[data-reg=\"0x1.0.ecx\"]');"
                          "if (!t) return null; var first = t.parentNode.parentNode.querySelector('.regs');"
                          "var row = t.querySelectorAll('tr')[1]; var cells = Array.from(row.querySelectorAll('td'))"
                          ".filter(td => !td.classList.contains('gap'));"
                          "return [cells.length, cells[31 - 27].dataset['class'], cells[31 - 27].title,"
                          " first === t.parentNode];})()")
            assert cell is not None, f"{cid}: no bit grid for 0x1.0.ECX"
            n, cls, title, grid_first = cell
            assert n == 32 and grid_first
            want = {f["class"] for f in by_id[cid]["findings"] if f["location"] == "0x1.ECX[27]"}
            assert cls in want and "osxsave" in title
        # filter by verdict: uncheck everything but fail (real clicks on the checkboxes)
        names = b.eval("Array.from(document.querySelectorAll('input[name=verdict]')).map(i => i.parentNode.textContent"
                       ".trim())")
        for i, name in enumerate(names):
            if name != "fail":
                b.click(f"input[name=verdict][value='{i}']")
        assert sorted(_matching(b)) == fails
        assert b.eval("Array.from(document.querySelectorAll('#list .case')).every(e => e.classList.contains('v-fail'))")
        b.click("button[type=reset]")
        # filter by finding class: only host-quirk (KVM cases on a PVM host) or only qemu-behaviour
        for cls in ("qemu-behaviour", "host-quirk"):
            b.click("button[type=reset]")
            boxes = b.eval("Array.from(document.querySelectorAll('input[name=class]')).map(i => "
                           "[i.value, i.parentNode.textContent.trim()])")
            for value, name in boxes:
                if name != cls:
                    b.click(f"input[name=class][value='{value}']")
            b.click("input[name=class-none]")
            want = sorted(r["id"] for r in rows if any(f["class"] == cls for f in r["findings"]))
            assert sorted(_matching(b)) == want, cls
        b.click("button[type=reset]")
        # navigation from the overview renders a case not yet in the list: the last one
        b.open(out.joinpath("report.html").resolve().as_uri() + "?chunk=2")
        last = b.eval("Array.from(document.querySelectorAll('#ov-grid td.cell')).map(t => t.dataset.case)"
                      ".filter(id => !document.getElementById('c-' + id)).pop()")
        assert last is not None
        b.click(f"#ov-grid td[data-case='{last}'] a")
        _settle(b, 200)
        assert b.eval(f"!!document.getElementById('c-{last}')")
        top = b.eval(f"document.getElementById('c-{last}').getBoundingClientRect().top")
        assert 0 <= top < 1100
        if kvm:
            quirky = [r for r in rows if r["quirk"] and len(r["findings"]) > 5]
            # a host whose KVM ignores QEMU's CPUID (PVM): one note for dozens of bits, shown once per case
            b.open(out / "report.html")
            for r in quirky:
                b.eval(f"location.hash = {json.dumps('c-' + r['id'])}")
                _settle(b)
                note = next(f["note"] for f in r["findings"] if f.get("note"))
                card = f"document.getElementById({json.dumps('c-' + r['id'])})"
                assert b.eval(f"{card}.textContent.split({json.dumps(note)}).length - 1") == 1, r["id"]
                assert b.eval(f"{card}.querySelectorAll('td[data-class=\"host-quirk\"]').length") > 5, r["id"]
        # details kept beside the page (a budget this small moves nearly every case out): loaded when shown
        from rig.report.write import write_reports
        from rig.run.rundir import RunDir

        split = out.parent / "split"
        write_reports(RunDir.open_existing(out), out=split, inline_details=2000)
        assert len(list((split / "report-details").glob("*.js"))) >= 1
        b.open(split / "report.html")
        ids = _matching(b)
        _settle(b, 300)
        assert b.eval("document.querySelectorAll('#list .case.pending').length") == 0
        with_grids = b.eval("Array.from(document.querySelectorAll('#list article.case')).filter(e => "
                            "e.querySelector('table.bits')).map(e => e.id.slice(2))")
        assert set(with_grids) == {r["id"] for r in rows if r["findings"]} and len(ids) == len(rows)
        b.open(out / "report.html")
        shot = b.screenshot(out / "overview-findings.png")
        b.eval(f"location.hash = 'c-{fails[0]}'")
        shot2 = b.screenshot(out / "case-findings.png")
    _keep(shot)
    _keep(shot2)


def test_run_tap_stdout(smoke_tap):
    """`rig run --tap`: stdout is the TAP13 stream alone (progress and report paths went to stderr)."""
    parser = pytest.importorskip("tap.parser", reason="tap.py is in the test extra (pip install 'tap.py[yaml]')")
    out, rows, stdout = smoke_tap
    lines = list(parser.Parser().parse_text(stdout))
    assert [ln.category for ln in lines[:2]] == ["version", "plan"] and lines[1].expected_tests == len(rows)
    assert not [ln for ln in lines if ln.category == "unknown"]
    tests = [ln for ln in lines if ln.category == "test"]
    verdict = {r["id"]: r["verdict"] for r in rows}
    assert len(tests) == len(rows)
    for t in tests:
        v = verdict[t.description.removeprefix("- ")]
        assert t.ok == (v in ("pass", "approximate")), (t.description, v)
    assert stdout == (out / "results.tap").read_text()
