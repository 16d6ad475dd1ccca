"""`rig run` with the ssh guest: a debootstrapped Debian system under real QEMU TCG, logged into with paramiko.

The image comes from the rig's own builder (``build_default_ssh_image``; debootstrap needs root the first
time).  References: QEMU's own QMP ``feature-words`` reply (the case's ``qmp.jsonl``), the architectural
position of AVX2 (CPUID.(EAX=7,ECX=0):EBX[5], Intel SDM vol. 2A) and the guest kernel's /proc/cpuinfo.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rig.cpuid.table import CpuidTable
from rig.guest.quirks import mismatching_words

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MATRIX = """
[matrix]
name = "ssh-run-test"
[defaults]
accels = ["tcg"]
guests = ["ssh"]
machines = ["q35"]
timeout = 120
[[group]]
name = "g"
models = ["EPYC-Rome"]
variants = [ { name = "default" }, { name = "no-avx2", flags = ["-avx2"] } ]
"""


@pytest.fixture(scope="module")
def image(qemu_binary):
    from rig.images import cache
    from rig.images.ssh import SshImageRecipe, build_default_ssh_image

    rootfs = cache.entry_dir("ssh-rootfs", SshImageRecipe.load().rootfs_key())
    if os.geteuid() != 0 and not cache.is_complete(rootfs):
        pytest.skip("building the ssh image needs root (debootstrap); run the tests as root once")
    if shutil.which("debootstrap") is None and not cache.is_complete(rootfs):
        pytest.skip("debootstrap not installed (run scripts/setup.sh)")
    return build_default_ssh_image()


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "rig.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def run(image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sshrun")
    (tmp / "m.toml").write_text(MATRIX)
    p = _start(["run", str(tmp / "m.toml"), "--out", str(tmp / "run"), "--jobs", "2", "--no-history"])
    out, err = p.communicate(timeout=400)
    results = {}
    for line in (tmp / "run" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        results[r["case"]["variant"]] = r
    return p.returncode, out, err, tmp / "run", results


def _qmp_feature_words(case: Path) -> CpuidTable:
    t = CpuidTable()
    for line in (case / "qmp.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("execute") == "qom-get" and rec.get("arguments", {}).get("property") == "feature-words":
            for w in rec["return"]:
                t.set_reg(w["cpuid-input-eax"], w.get("cpuid-input-ecx", 0), w["cpuid-register"].lower(), w["features"])
            return t
    raise AssertionError("no feature-words reply in qmp.jsonl")


def test_ssh_cases_run_and_agree_with_qemu(run):
    rc, out, err, rundir, results = run
    assert rc == 0, out[-2000:] + err[-2000:]
    assert set(results) == {"default", "no-avx2"}
    for variant, r in results.items():
        assert r["outcome"] == "ok", (r["id"], r["message"])
        assert r["verdict"] == "pass", (r["id"], r["unexpected"])
        case = rundir / r["artifacts"]
        for name in ("cmdline.txt", "serial.log", "qmp.jsonl", "views.json"):
            assert (case / name).is_file(), name
        cmdline = (case / "cmdline.txt").read_text()
        assert "hostfwd=tcp:127.0.0.1:" in cmdline and "snapshot=on" in cmdline
        v = json.loads((case / "views.json").read_text())
        user = CpuidTable.from_json(v["observed"]["user"])
        fw = _qmp_feature_words(case)
        assert [w.describe() for w in mismatching_words(user, fw)] == [], r["id"]
        want = 0 if variant == "no-avx2" else 1
        assert fw.bit(7, 0, "ebx", 5) == user.bit(7, 0, "ebx", 5) == want
        predicted, configured, observed = (int(x, 16) >> 5 & 1 for x in r["words"]["0x7.0.ebx"])
        assert (predicted, configured, observed) == (want, want, want)
        assert ("avx2" in v["kernel"]["cpuinfo_flags"]) == bool(want)
        assert v["kernel"]["view"]["cpuid_only"] == [] and v["kernel"]["view"]["cpuinfo_only"] == []
        assert v["ssh"]["insncheck"] and v["ssh"]["boot_to_login_s"] > 0
        assert {"spectre_v1", "spectre_v2"} <= set(v["kernel"]["vulnerabilities"])


def test_repro_points_to_rig_ssh(run):
    _, _, _, rundir, results = run
    r = results["no-avx2"]
    p = _start(["repro", r["id"], "--run", str(rundir)])
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "rig ssh --cpu EPYC-Rome,-avx2 --machine q35 --accel tcg" in err, err


def _qemu_pids_under(path: Path, marker: str = "qemu-system") -> list[int]:
    """PIDs of live QEMUs whose command line mentions ``path`` and ``marker`` (read-only check)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd and "qemu-system" in cmd and marker in cmd:
            out.append(int(d.name))
    return out


def test_sigterm_during_boot_leaves_no_qemu(image, tmp_path):
    (tmp_path / "m.toml").write_text(MATRIX)
    run = tmp_path / "run"
    p = _start(["run", str(tmp_path / "m.toml"), "--out", str(run), "--jobs", "2", "--no-history"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_qemu_pids_under(run, "hostfwd=")) < 2:
        time.sleep(0.2)
    assert _qemu_pids_under(run, "hostfwd="), "the ssh guests' QEMUs never started"
    time.sleep(1.0)  # into the boot (login takes 7-35 s under TCG)
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = p.communicate(timeout=60)
    stopped_after = time.monotonic() - t0
    assert p.returncode == 130, err[-2000:]
    # the guests were still booting (login takes 7-35 s): the run stopped their QEMUs instead of waiting
    assert stopped_after < 5, f"rig run took {stopped_after:.1f} s to stop after SIGTERM"
    assert "resume with: rig run --resume" in err
    time.sleep(0.5)
    assert _qemu_pids_under(run) == []


def test_sigkill_of_the_rig_leaves_no_qemu(image, tmp_path):
    """A rig killed with SIGKILL cannot stop anything: the ssh guests' QEMUs go because they run under the
    parent-death signal (``setpriv --pdeathsig KILL``), like every QEMU the launcher starts."""
    (tmp_path / "m.toml").write_text(MATRIX)
    run = tmp_path / "run"
    p = _start(["run", str(tmp_path / "m.toml"), "--out", str(run), "--jobs", "2", "--no-history"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_qemu_pids_under(run, "hostfwd=")) < 2:
        time.sleep(0.2)
    assert _qemu_pids_under(run, "hostfwd="), "the ssh guests' QEMUs never started"
    p.kill()
    p.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _qemu_pids_under(run):
        time.sleep(0.1)
    left = _qemu_pids_under(run)
    for pid in left:  # do not leave them running if the test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"QEMU outlived a SIGKILLed rig: {left}"
