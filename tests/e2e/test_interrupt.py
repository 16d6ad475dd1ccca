"""Nothing left behind, nothing lost: the rig interrupted (SIGINT, SIGKILL) while QEMU runs.

* no QEMU outlives a SIGKILLed rig: during `rig host emulate` (L1's QEMU) and during `rig run` of a
  matrix with an ``emulated:`` host (L1's QEMU, and the L2 QEMU inside it goes with L1);
* an interrupted case is never a result: a run interrupted at several points and resumed each time
  ends with the same case set and the same verdicts as an uninterrupted run of the same matrix, every
  case exactly once (a TCG matrix, and one on an emulated host).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

TCG_MATRIX = """
[matrix]
name = "interrupt-tcg"
[defaults]
accels = ["tcg"]
machines = ["microvm"]
timeout = 30
[[group]]
name = "g"
models = ["qemu64", "Skylake-Server", "EPYC-Rome", "Penryn"]
variants = [ { name = "default" }, { name = "no-sse4.2", flags = ["sse4.2=off"] }, { name = "px", flags = ["+x2apic"] },
             { name = "np", flags = ["-pni"] } ]
"""

EMULATED_MATRIX = """
[matrix]
name = "interrupt-emulated"
[[group]]
name = "g"
models = ["EPYC-Rome"]
variants = [ { name = "default" }, { name = "no-avx2", flags = ["-avx2"] }, { name = "no-sse4.2", flags = ["sse4.2=off"] } ]
accels = ["kvm"]
machines = ["microvm"]
hosts = ["emulated:EPYC-Rome@6.12"]
timeout = 90
"""


def qemu_pids(marker: str) -> list[int]:
    """Live (not zombie) QEMU processes whose command line mentions ``marker`` (a test's private path)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and "qemu-system" in cmd and state != "Z":
            out.append(int(d.name))
    return out


def gone_within(marker: str, seconds: float) -> list[int]:
    """QEMUs still alive after ``seconds`` (PR_SET_PDEATHSIG delivery is asynchronous)."""
    deadline = time.monotonic() + seconds
    while (left := qemu_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path),
            "RIG_CACHE_DIR": os.environ.get("RIG_CACHE_DIR", str(Path.home() / ".cache/kvm-cpuid-rig"))}


def rig(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rig.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def results(run: Path) -> list[dict]:
    p = run / "results.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.endswith("}")]


def wait_for(cond, proc: subprocess.Popen, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the rig ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"no {what} within {seconds:g} s"
        time.sleep(0.02)


def kill_rig(proc: subprocess.Popen, sig: int) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return err


# ------------------------------------------------------------------ no QEMU outlives the rig

@pytest.mark.slow
def test_sigkill_during_host_emulate_leaves_no_qemu(tmp_path, env, qemu_binary):
    p = rig("host", "emulate", "--cpu", "EPYC-Rome", "--kernel", "6.12", "-o", str(tmp_path / "p.json"), env=env)
    marker = str(tmp_path)  # L1's work directory (console log, data socket) is under TMPDIR
    wait_for(lambda: qemu_pids(marker), p, 240, "L1 QEMU")
    time.sleep(2)  # L1 booting
    kill_rig(p, signal.SIGKILL)
    assert not gone_within(marker, 5), "L1's QEMU outlived the SIGKILLed `rig host emulate`"


@pytest.mark.slow
def test_sigkill_during_emulated_run_leaves_no_qemu(tmp_path, env, qemu_binary):
    m = tmp_path / "m.toml"
    m.write_text(EMULATED_MATRIX)
    out = tmp_path / "run"
    p = rig("run", str(m), "--out", str(out), "--no-history", env=env)
    marker = str(out)  # L1's work directory is the run's hosts/ directory
    wait_for(lambda: qemu_pids(marker), p, 240, "L1 QEMU")
    time.sleep(2)
    kill_rig(p, signal.SIGKILL)
    assert not gone_within(marker, 5), "L1's QEMU outlived the SIGKILLed `rig run`"


# ------------------------------------------------------------------ interrupted cases are not results

def uninterrupted(matrix: Path, out: Path, env: dict) -> dict[str, str]:
    p = rig("run", str(matrix), "--out", str(out), "--no-history", env=env)
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    return {r["id"]: r["verdict"] for r in results(out)}


def interrupted_chain(matrix: Path, out: Path, env: dict, points: list[tuple[int, int]]) -> list[dict]:
    """Run, interrupt once ``points[i][0]`` results are in (0: once a QEMU runs) with signal ``points[i][1]``,
    resume, and so on;
    the last resume runs to the end.  Returns the final results."""
    p = rig("run", str(matrix), "--out", str(out), "--no-history", env=env)
    for n, sig in points:
        # n == 0: once a QEMU of the run is up (for an emulated host: while L1 boots)
        wait_for(lambda n=n: len(results(out)) >= n and (n or qemu_pids(str(out))), p, 600, f"{n} results")
        err = kill_rig(p, sig)
        if sig == signal.SIGINT:
            assert p.returncode == 130, err
            assert f"rig run --resume {out}" in err
        assert not gone_within(str(out), 5), f"a QEMU outlived the rig interrupted by {signal.Signals(sig).name}"
        assert all(r["verdict"] != "error" for r in results(out)), "an interrupted case was recorded as an error"
        p = rig("run", "--resume", str(out), "--no-history", env=env)
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    return results(out)


def check_same_as(reference: dict[str, str], final: list[dict]) -> None:
    ids = [r["id"] for r in final]
    assert len(ids) == len(set(ids)), "a case was recorded twice"
    assert set(ids) == set(reference)
    assert {r["id"]: r["verdict"] for r in final} == reference


def test_interrupted_tcg_run_resumes_to_the_uninterrupted_result(tmp_path, env, qemu_binary):
    m = tmp_path / "m.toml"
    m.write_text(TCG_MATRIX)
    reference = uninterrupted(m, tmp_path / "ref", env)
    assert len(reference) == 16
    final = interrupted_chain(m, tmp_path / "run", env, [(0, signal.SIGINT), (3, signal.SIGKILL),
                                                         (7, signal.SIGINT), (11, signal.SIGKILL)])
    check_same_as(reference, final)


@pytest.mark.slow
def test_interrupted_emulated_run_resumes_to_the_uninterrupted_result(tmp_path, env, qemu_binary):
    m = tmp_path / "m.toml"
    m.write_text(EMULATED_MATRIX)
    reference = uninterrupted(m, tmp_path / "ref", env)
    assert len(reference) == 3 and set(reference.values()) == {"pass"}
    # during L1's boot, during the second case (SIGINT: the in-flight case was once recorded as a rig-error),
    # and during the third (SIGKILL)
    final = interrupted_chain(m, tmp_path / "run", env, [(0, signal.SIGINT), (1, signal.SIGINT), (2, signal.SIGKILL)])
    check_same_as(reference, final)
