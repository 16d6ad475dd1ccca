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


#: parser -> [inputs tried, accepted, failures], filled by the bad-input property tests (tests/unit/test_badinput_props.py)
FUZZ_TALLY = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def fuzz_tally(request) -> dict:
    return request.config.stash.setdefault(FUZZ_TALLY, {})


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    tally = config.stash.get(FUZZ_TALLY, None)
    if not tally:
        return
    tr = terminalreporter
    tr.section("bad input: inputs tried per parser")
    width = max(len(k) for k in tally)
    tr.write_line(f"{'parser (entry point)':<{width}}  {'inputs':>7}  {'accepted':>8}  {'refused':>7}  {'failures':>8}"
                  "   (refused: one-line error, exit 2; failures: property broken)")
    rows = [*sorted(tally.items()), ("total", [sum(r[i] for r in tally.values()) for i in range(3)])]
    for name, (tried, accepted, failed) in rows:
        tr.write_line(f"{name:<{width}}  {tried:>7}  {accepted:>8}  {tried - accepted - failed:>7}  {failed:>8}")
