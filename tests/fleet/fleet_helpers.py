"""Helpers of the fleet tests (imported by path: pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rig(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"rig {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


class Worker:
    def __init__(self, broker: str, db: str, cls: str, name: str, workdir: Path, jobs: int = 1) -> None:
        self.name = name
        self.workdir = workdir
        self.log = workdir.with_suffix(".log")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rig.cli", "fleet", "worker", "--broker", broker, "--db", db, "--class", cls,
                 "--name", name, "--jobs", str(jobs), "--workdir", str(workdir), "--redeliver-after", "6"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(pred, timeout: float, what: str, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
