"""`rig run` as a user runs it: killed midway (SIGINT, SIGKILL) and resumed, nothing is lost or repeated and no
QEMU survives; reports, history and `rig repro` on a real run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rig.qemu.runtime_dir import runtime_base

pytestmark = pytest.mark.e2e

MATRIX = """
[matrix]
name = "resume-test"
[defaults]
accels = ["tcg"]
machines = ["microvm"]
timeout = 30
[[group]]
name = "g"
models = ["qemu64", "Skylake-Server", "EPYC-Rome", "Penryn"]
variants = [ { name = "default" }, { name = "no-sse4.2", flags = ["sse4.2=off"] }, { name = "px", flags = ["+x2apic"] },
             { name = "np", flags = ["-pni"] }, { name = "nl", flags = ["lm=off"] } ]
"""
TOTAL = 20


def qemu_pids(marker: str) -> list[int]:
    """PIDs of QEMU processes whose command line mentions ``marker`` (a test's private path)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") if d.name.isdigit() else ""
        except OSError:
            continue
        if marker in cmd and "qemu-system" in cmd:
            out.append(int(d.name))
    return out


def rig(*args: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rig.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def env(tmp_path, qemu_binary):
    return {**os.environ, "RIG_CACHE_DIR": os.environ.get("RIG_CACHE_DIR", str(Path.home() / ".cache/kvm-cpuid-rig")),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def interrupt_midway(tmp_path: Path, env: dict, sig: int) -> tuple[Path, list[str], int]:
    m = tmp_path / "m.toml"
    m.write_text(MATRIX)
    out = tmp_path / "run"
    p = rig("run", str(m), "--out", str(out), "--jobs", "2", "--no-history", env=env)
    deadline = time.monotonic() + 60
    while len(lines(out / "results.jsonl")) < 4:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    (tmp_path / "killed.pid").write_text(str(p.pid))
    return out, lines(out / "results.jsonl"), p.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_kill_and_resume_loses_and_repeats_nothing(tmp_path, env, sig):
    out, first, rc, err = interrupt_midway(tmp_path, env, sig)
    if sig == signal.SIGINT:
        assert rc == 130, err
        assert f"rig run --resume {out}" in err
    else:
        assert rc == -signal.SIGKILL
    assert 4 <= len(first) < TOTAL, "the run finished before it could be interrupted"
    time.sleep(0.2)  # PR_SET_PDEATHSIG delivery after SIGKILL is asynchronous
    assert not qemu_pids(str(out)), "a QEMU survived the interrupted run"
    complete_before = [ln for ln in first if ln.endswith("}")]

    p = rig("run", "--resume", str(out), "--no-history", env=env)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert f"resuming: {len(complete_before)} finished earlier" in stderr or sig == signal.SIGKILL
    after = lines(out / "results.jsonl")
    ids = [json.loads(ln)["id"] for ln in after]
    assert len(ids) == TOTAL and len(set(ids)) == TOTAL  # every case exactly once
    assert after[: len(complete_before)] == complete_before  # finished cases kept as they were
    assert all(json.loads(ln)["verdict"] == "pass" for ln in after)
    assert "report: " in stdout and (out / "report.html").exists()
    assert not qemu_pids(str(out))
    # the killed rig's private runtime directories (QMP sockets, live serial logs) went with the next run
    killed = (tmp_path / "killed.pid").read_text()
    assert not list(Path(runtime_base() or tempfile.gettempdir()).glob(f"rig-{killed}-*"))


def test_run_report_history_and_repro(tmp_path, env):
    m = tmp_path / "m.toml"
    m.write_text(MATRIX)
    hist = tmp_path / "h.sqlite"
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        p = rig("run", str(m), "-k", "EPYC and (default or no-sse4.2)", "--out", str(out), "--history", str(hist),
                env=env)
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        assert f"report: {out}/report.html" in stdout
        runs.append(out)
    assert "history: against the previous run on this host: 0 bits changed, 0 new findings, 0 fixed, 0 outcomes changed" \
        in stdout
    p = rig("history", "--db", str(hist), env=env)
    stdout, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and "no changes" in stdout
    results = [json.loads(ln) for ln in lines(runs[1] / "results.jsonl")]
    assert len(results) == 2
    case = next(r for r in results if r["case"]["variant"] == "no-sse4.2")
    # repro: a standalone script that runs plain QEMU and shows the same guest CPUID row
    p = rig("repro", case["id"][:20], "--run", str(runs[1]), "-o", str(tmp_path / "repro"), env=env)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    script = tmp_path / "repro" / "repro.sh"
    assert "rig" not in script.read_text().split("set -u", 1)[1].replace("rig case", "").replace("rig-", "")
    r = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    assert "QEMU exit status: 33" in r.stdout, r.stdout + r.stderr
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("C 00000001 00000000"))
    ecx = int(row.split()[5], 16)
    assert not ecx >> 20 & 1  # sse4.2 (1.ECX[20]) is off, as in the case
    observed = case["words"]["0x1.0.ecx"][2]
    assert observed is not None and not int(observed, 16) >> 20 & 1
    replies = (tmp_path / "repro" / "qmp-replies.jsonl").read_text()
    assert '"cpuid-register"' in replies  # the qom-get feature-words reply
