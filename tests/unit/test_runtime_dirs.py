"""Runtime directories left by a killed rig (SIGKILL: no cleanup ran) are swept by the next rig."""

from __future__ import annotations

import os
import subprocess
import sys

from rig.qemu.runtime_dir import sweep_stale_runtime_dirs


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                       check=True)
    return int(p.stdout)


def test_dirs_of_dead_rigs_go_live_ones_stay(tmp_path):
    dead = tmp_path / f"rig-{_dead_pid()}-abc"
    live = tmp_path / f"rig-{os.getpid()}-def"
    other = tmp_path / "rig-notapid"
    for d in (dead, live, other):
        d.mkdir()
        (d / "qmp.sock").write_text("")
    sweep_stale_runtime_dirs.cache_clear()
    assert sweep_stale_runtime_dirs(str(tmp_path)) == 1
    assert not dead.exists() and live.exists() and other.exists()
    # once per process and directory
    dead.mkdir()
    assert sweep_stale_runtime_dirs(str(tmp_path)) == 1 and dead.exists()
    sweep_stale_runtime_dirs.cache_clear()
