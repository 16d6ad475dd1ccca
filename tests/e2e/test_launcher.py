"""The launcher with real QEMU: QMP observation, outcome classes (ok, probe-failed, qemu-error, qemu-aborted,
timeout), escalating shutdown, cancellation and the private runtime directory; no QEMU may survive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from rig.images.probe import build_probe
from rig.qemu.cmdline import QemuCommand
from rig.qemu.launcher import LaunchSpec, launch
from rig.run.guests import ProbeReader

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def probe(qemu_binary):
    return build_probe()


def qemu_pids(marker: str) -> list[int]:
    """PIDs of processes whose command line mentions ``marker`` (a test's private path)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and "qemu" in cmd:
            out.append(int(d.name))
    return out


def boot_sector(tmp_path: Path, code: bytes) -> Path:
    img = tmp_path / "boot.img"
    img.write_bytes(code.ljust(510, b"\0") + b"\x55\xaa")
    return img


def run(spec: LaunchSpec):
    return asyncio.run(launch(spec))


def test_probe_run_observes_qmp_and_serial(tmp_path, probe, qemu_binary):
    reader = ProbeReader("t")
    cmd = QemuCommand(binary=qemu_binary, machine="microvm", cpu="EPYC-Rome,-avx2", kernel=probe.pvh)
    obs = run(LaunchSpec(cmd, "t", tmp_path / "w", timeout=30, probe_check=reader))
    assert obs.outcome == "ok", obs.message
    assert obs.exit_code == 33
    # configured view over QMP: avx2 (7.0.EBX[5]) off as asked, bmi1 (7.0.EBX[3]) from the model on;
    # sha-ni (7.0.EBX[29]) is in EPYC-Rome but QEMU 7.2's TCG cannot do it: filtered, not configured
    fw, ff = obs.feature_words, obs.filtered_features
    assert fw.bit(7, 0, "ebx", 5) == 0 and fw.bit(7, 0, "ebx", 3) == 1
    assert fw.bit(7, 0, "ebx", 29) == 0 and ff.bit(7, 0, "ebx", 29) == 1
    assert obs.expansion["model"]["name"] == "EPYC-Rome"
    # observed view: the guest read the same bits in both modes of the PVH form
    assert set(reader.report.tables) == {"prot32", "long64"}
    assert reader.report.tables["long64"].bit(7, 0, "ebx", 5) == 0
    # artifacts: command line first, serial log, QMP transcript in order
    w = tmp_path / "w"
    assert (w / "cmdline.txt").read_text().startswith(qemu_binary + " -nodefaults")
    assert "RIGPROBE" in (w / "serial.log").read_text()
    cmds = [json.loads(line)["execute"] for line in (w / "qmp.jsonl").read_text().splitlines()]
    assert cmds[:4] == ["query-cpus-fast", "qom-get", "qom-get", "query-cpu-model-expansion"] and cmds[-1] == "cont"
    assert not qemu_pids(str(tmp_path))


def test_private_runtime_dir_is_0700_and_removed(tmp_path, probe, qemu_binary, monkeypatch):
    rt = tmp_path / "rt"
    rt.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(rt))
    seen: list[int] = []

    async def main():
        cmd = QemuCommand(binary=qemu_binary, machine="microvm")  # no kernel: hangs in the firmware
        task = asyncio.ensure_future(launch(LaunchSpec(cmd, "rt", tmp_path / "w", timeout=3)))
        for _ in range(200):
            dirs = [p for p in rt.iterdir() if p.name.startswith("rig-")]
            if dirs and (dirs[0] / "qmp.sock").exists():
                seen.append(stat.S_IMODE(dirs[0].stat().st_mode))
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == [0o700]
    assert list(rt.iterdir()) == []
    assert not qemu_pids(str(tmp_path))


def test_unknown_model_is_qemu_error(tmp_path, probe, qemu_binary):
    cmd = QemuCommand(binary=qemu_binary, cpu="Skylake-Srvr", kernel=probe.pvh)
    obs = run(LaunchSpec(cmd, "t", tmp_path / "w", timeout=10))
    assert obs.outcome == "qemu-error"
    assert "unable to find CPU model 'Skylake-Srvr'" in obs.message


def test_hang_is_timeout_and_qemu_is_gone(tmp_path, qemu_binary):
    cmd = QemuCommand(binary=qemu_binary, machine="microvm")  # qboot finds nothing to boot: hangs
    t0 = time.monotonic()
    obs = run(LaunchSpec(cmd, "t", tmp_path / "w", timeout=1.5))
    assert obs.outcome == "timeout"
    assert "did not exit within 1.5 s" in obs.message
    assert time.monotonic() - t0 < 6
    assert not qemu_pids(str(tmp_path))


def test_guest_failure_exit_is_probe_failed(tmp_path, qemu_binary):
    # mov al, 0x11; out 0xf4, al; hlt  -- the probe's failure value through isa-debug-exit
    img = boot_sector(tmp_path, b"\xb0\x11\xe6\xf4\xf4")
    obs = run(LaunchSpec(QemuCommand(binary=qemu_binary, machine="pc", drive=img), "t", tmp_path / "w", timeout=20))
    assert obs.exit_code == 35 and obs.outcome == "probe-failed"


def test_exit_ok_without_a_transcript_is_probe_failed(tmp_path, qemu_binary):
    # the success value but no RIGPROBE output: the reader must not trust the exit status alone
    img = boot_sector(tmp_path, b"\xb0\x10\xe6\xf4\xf4")
    reader = ProbeReader("t")
    obs = run(LaunchSpec(QemuCommand(binary=qemu_binary, machine="pc", drive=img), "t", tmp_path / "w", timeout=20,
                         probe_check=reader))
    assert obs.exit_code == 33 and obs.outcome == "probe-failed"
    assert "no RIGPROBE header" in obs.message and reader.error is not None


def test_qemu_killed_by_a_signal_is_qemu_aborted(tmp_path, qemu_binary):
    async def main():
        cmd = QemuCommand(binary=qemu_binary, machine="microvm")
        task = asyncio.ensure_future(launch(LaunchSpec(cmd, "t", tmp_path / "w", timeout=10)))
        for _ in range(300):
            await asyncio.sleep(0.01)
            pids = qemu_pids(str(tmp_path))
            if pids and (tmp_path / "w" / "qmp.jsonl").read_text().count("\n") >= 4:
                os.kill(pids[0], signal.SIGABRT)
                break
        return await task

    obs = asyncio.run(main())
    assert obs.outcome == "qemu-aborted" and "SIGABRT" in obs.message


def test_cpu_host_on_kvm_ends_as_a_result(tmp_path, probe, qemu_binary):
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm on this machine")
    reader = ProbeReader("t")
    cmd = QemuCommand(binary=qemu_binary, accel="kvm", cpu="host", kernel=probe.pvh)
    obs = run(LaunchSpec(cmd, "t", tmp_path / "w", timeout=30, probe_check=reader))
    # on a PVM host QEMU aborts ("failed to set MSR 0x10a"); on a normal KVM host the probe reports
    assert obs.outcome in ("ok", "qemu-aborted"), obs.message
    if obs.outcome == "qemu-aborted":
        assert obs.message.startswith("QEMU killed by SIGABRT") and "failed to set MSR" in obs.message
    assert not qemu_pids(str(tmp_path))
