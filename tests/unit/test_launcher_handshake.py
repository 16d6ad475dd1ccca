"""The launcher's QMP handshake when QEMU goes away under it (the flaky test_unknown_model_is_qemu_error).

qemu.qmp's ``accept()`` was seen raising a bare ``AssertionError`` (``self.runstate == Runstate.RUNNING``)
when QEMU exited right after its greeting (an unknown ``-cpu`` model).  The handshake here is a stand-in
client raising exactly that; the process is real.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rig.qemu.launcher import LaunchSpec, _Run
from rig.qemu.process import QemuProcess


class AssertingClient:
    async def accept(self) -> None:
        await asyncio.sleep(0.05)
        raise AssertionError("self.runstate == Runstate.RUNNING")


def handshake(tmp_path, script: str) -> _Run:
    async def go() -> _Run:
        run = _Run(LaunchSpec(command=None, name="t", workdir=tmp_path))
        run.proc = QemuProcess.start(["sh", "-c", script], stderr=tmp_path / "stderr.log")
        run.client = AssertingClient()  # type: ignore[assignment]
        try:
            await run.connect(tmp_path / "qmp.sock", "accept", time.monotonic() + 5)
        finally:
            await run.proc.stop_async(0.2)
        return run

    return asyncio.run(go())


def test_qemu_exiting_during_the_handshake_is_left_to_its_exit_status(tmp_path):
    run = handshake(tmp_path, "sleep 0.2; exit 1")
    assert not run.connected and run.proc.returncode == 1


def test_a_failed_handshake_of_a_live_qemu_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError, match="QMP handshake failed .*AssertionError"):
        handshake(tmp_path, "sleep 5")
