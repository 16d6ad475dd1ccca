"""Fixtures of the end-to-end tests: `rig run` of a matrix text as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RigRun:
    """A finished `rig run`: the process, its run directory and its results lines."""

    proc: subprocess.CompletedProcess
    out: Path
    rows: list[dict[str, Any]]

    def views(self, row: dict[str, Any]) -> dict[str, Any]:
        """The case's views.json."""
        return json.loads((self.out / row["artifacts"] / "views.json").read_text())

    def artifact(self, row: dict[str, Any], name: str) -> str:
        return (self.out / row["artifacts"] / name).read_text()


def run_matrix(tmp: Path, matrix: str, *args: str, timeout: float = 300) -> RigRun:
    """Write ``matrix`` to ``tmp/m.toml`` and run ``rig run`` on it (2 jobs, no history) into ``tmp/run``."""
    (tmp / "m.toml").write_text(matrix)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(tmp / "m.toml"), "--out", str(tmp / "run"),
                        "--jobs", "2", "--no-history", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    results = tmp / "run" / "results.jsonl"
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    return RigRun(p, tmp / "run", rows)


@pytest.fixture
def rig_run(tmp_path) -> Callable[..., RigRun]:
    """``rig_run(matrix_text, *args)``: :func:`run_matrix` in the test's temporary directory."""
    return lambda matrix, *args, **kw: run_matrix(tmp_path, matrix, *args, **kw)


@pytest.fixture(scope="session")
def rig_run_in() -> Callable[..., RigRun]:
    """:func:`run_matrix` itself, for module-scoped fixtures: ``rig_run_in(tmp_dir, matrix_text, *args)``."""
    return run_matrix
