"""Shared fixtures: paths to real-world data and skips that state their reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ("rig.run.pytest_plugin",)  # --matrix: rig matrices as tests (tests/e2e/test_matrix.py)

LIBVIRT_DATA = Path(os.environ.get("RIG_LIBVIRT_DATA", REPO.parent / "shared" / "data" / "libvirt-cputestdata"))


@pytest.fixture(scope="session")
def libvirt_data() -> Path:
    if not LIBVIRT_DATA.is_dir():
        pytest.skip(f"libvirt cputestdata not present at {LIBVIRT_DATA} (set RIG_LIBVIRT_DATA)")
    return LIBVIRT_DATA


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    b = shutil.which("qemu-system-x86_64")
    if b is None:
        pytest.skip("qemu-system-x86_64 not installed (run scripts/setup.sh)")
    return b
