"""The launcher's fast paths with real QEMU: QMP commands pipelined after the greeting (capabilities, CPU
queries, then ``cont``/``quit``), the CPU 0 path guess checked against ``query-cpus-fast``, QEMU started
without a thread per child, and a missing binary reported as such."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from rig.images.probe import build_probe
from rig.qemu import qmp
from rig.qemu.cmdline import QemuCommand
from rig.qemu.launcher import LaunchSpec, launch
from rig.run.guests import ProbeReader

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def probe(qemu_binary):
    return build_probe()


def transcript(workdir) -> list[dict]:
    return [json.loads(ln) for ln in (workdir / "qmp.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("machine", ["microvm", "q35+pvh"])
def test_queries_answered_before_the_guest_runs(tmp_path, probe, qemu_binary, machine):
    reader = ProbeReader("t")
    base = machine.split("+")[0]
    cmd = QemuCommand(binary=qemu_binary, machine=base, cpu="EPYC-Rome,-avx2", kernel=probe.pvh)
    obs = asyncio.run(launch(LaunchSpec(cmd, "t", tmp_path / "w", timeout=20, probe_check=reader)))
    assert obs.outcome == "ok", obs.message
    t = transcript(tmp_path / "w")
    assert [e["execute"] for e in t] == ["query-cpus-fast", "qom-get", "qom-get", "query-cpu-model-expansion", "cont"]
    # the qom-gets went to the path query-cpus-fast names (no second try needed on this machine type)
    path = t[0]["return"][0]["qom-path"]
    assert all(e["arguments"]["path"] == path for e in t[1:3])
    # CPUID.(EAX=7,ECX=0):EBX[5] is AVX2 (Intel SDM vol. 2A): off in QEMU's words and in the guest
    assert obs.feature_words.bit(7, 0, "ebx", 5) == 0
    assert reader.report.tables["long64"].bit(7, 0, "ebx", 5) == 0
    assert {"spawn", "qmp_connected", "qmp_ready", "queries", "exit"} <= set(obs.timings_ms)


def test_wrong_cpu0_path_guess_is_asked_again(tmp_path, probe, qemu_binary, monkeypatch):
    seen: list = []
    real = qmp.QmpSession.observe_cpu

    async def wrong_guess(self, model, **kw):
        kw["qom_path_guess"] = "/machine/unattached/device[99]"
        out = await real(self, model, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(qmp.QmpSession, "observe_cpu", wrong_guess)
    cmd = QemuCommand(binary=qemu_binary, cpu="EPYC-Rome,-avx2", kernel=probe.pvh)
    obs = asyncio.run(launch(LaunchSpec(cmd, "t", tmp_path / "w", timeout=20)))
    assert obs.outcome == "ok", obs.message
    t = transcript(tmp_path / "w")
    wrong = [e for e in t if e["execute"] == "qom-get" and e["arguments"]["path"].endswith("[99]")]
    assert len(wrong) == 2 and all("error" in e for e in wrong)
    assert seen and seen[0].qom_path == t[0]["return"][0]["qom-path"] != "/machine/unattached/device[99]"
    assert obs.feature_words.bit(7, 0, "ebx", 5) == 0 and obs.feature_words.bit(7, 0, "ebx", 3) == 1


def test_query_only_launch_quits_after_the_queries(tmp_path, qemu_binary):
    cmd = QemuCommand(binary=qemu_binary, machine="microvm", cpu="Skylake-Server")  # no guest at all
    obs = asyncio.run(launch(LaunchSpec(cmd, "t", tmp_path / "w", timeout=20, query_only=True,
                                        query_definitions=True)))
    assert obs.outcome == "ok" and obs.exit_code == 0, obs.message
    assert [e["execute"] for e in transcript(tmp_path / "w")][-1] == "quit"
    assert obs.expansion["model"]["name"] == "Skylake-Server"
    assert any(d.name == "Skylake-Server" for d in obs.definitions)


def test_launches_start_no_threads(tmp_path, probe, qemu_binary):
    # (asyncio's child watcher of Python 3.11 waits for every child in a thread of its own)
    async def main():
        before = threading.active_count()
        most = before
        cmd = QemuCommand(binary=qemu_binary, kernel=probe.pvh)
        runs = asyncio.gather(*(launch(LaunchSpec(cmd, f"t{i}", tmp_path / f"w{i}", timeout=20)) for i in range(3)))
        while not runs.done():
            most = max(most, threading.active_count())
            await asyncio.sleep(0.002)
        assert all(o.outcome == "ok" for o in await runs)
        return before, most

    before, most = asyncio.run(main())
    assert most == before


def test_missing_binary_is_qemu_error(tmp_path):
    cmd = QemuCommand(binary=str(tmp_path / "no-such-qemu"))
    obs = asyncio.run(launch(LaunchSpec(cmd, "t", tmp_path / "w", timeout=5)))
    assert obs.outcome == "qemu-error"
    assert obs.message.startswith(f"cannot start {tmp_path / 'no-such-qemu'}")
