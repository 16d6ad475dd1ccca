"""The README's main command as a new user runs it: an empty cache (issue 11)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.qemu.binaries import find_qemu, gather_facts

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_smoke_matrix_from_an_empty_cache(tmp_path: Path) -> None:
    """`rig run matrices/smoke.toml` with a fresh RIG_CACHE_DIR: the QEMU facts, the probe and
    everything else are made on the way; every case passes (it crashed with an asyncio error)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RIG_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(REPO / "matrices" / "smoke.toml"),
                        "--out", str(tmp_path / "run"), "--no-history"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    assert {r["verdict"] for r in rows} == {"pass"}, [(r["id"], r["verdict"]) for r in rows if r["verdict"] != "pass"]


def test_gather_facts_inside_a_running_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run predicts inside its event loop; a binary's first facts must still be gathered there."""
    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))
    binary = find_qemu("system")

    async def inside() -> list[str]:
        return [d.name for d in gather_facts(binary).definitions]

    names = asyncio.run(inside())
    assert "qemu64" in names and "EPYC-Rome" in names
