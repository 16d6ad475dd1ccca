"""The oracle matrix, booted once per test session (rig/emulate/data/oracle.toml).

Every host of the matrix is an L1 Debian kernel under TCG with real KVM.  Each
kernel × model boots exactly once (profile-only image, ``parallel`` at a
time); its parameter sets are captured by reloading the KVM modules in that
L1 (test_reload_equals_fresh_boot shows this is the same as booting afresh);
the tests share the captured profiles.  Set ``RIG_ORACLE_OUT=DIR`` to also save them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rig.emulate.oracle import Captured, capture_matrix, load_matrix
from rig.images.debian import DebianError
from rig.images.kernel import KernelError


@pytest.fixture(scope="session")
def oracle_matrix():
    return load_matrix()


@pytest.fixture(scope="session")
def oracle_captures(oracle_matrix) -> dict[str, Captured]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed (run scripts/setup.sh)")
    out = os.environ.get("RIG_ORACLE_OUT")
    try:
        caps = capture_matrix(oracle_matrix.hosts(), Path(out) if out else None, parallel=oracle_matrix.parallel)
    except (DebianError, KernelError) as e:
        pytest.skip(f"Debian kernels for the oracle matrix cannot be fetched (network to the archive needed once): {e}")
    return {str(c.host): c for c in caps}
