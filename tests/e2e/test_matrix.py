"""A rig matrix under pytest: one test per case (`pytest tests/e2e/test_matrix.py --matrix matrices/smoke.toml`).

Without ``--matrix`` it runs the smoke matrix, which on a TCG-only or PVM machine must have no unexpected
findings (the README's main command runs the same matrix).  Parameters come from rig.run.pytest_plugin.
"""

from __future__ import annotations

import pytest

from rig.run.pytest_plugin import matrix_params, run_one

pytestmark = pytest.mark.e2e


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rig_case" in metafunc.fixturenames:
        metafunc.parametrize(("rig_matrix", "rig_case"), matrix_params(metafunc.config))


def test_case(rig_runs, rig_matrix, rig_case, qemu_binary):
    r = run_one(rig_runs, rig_matrix, rig_case)
    assert r.verdict in ("pass", "expected"), (
        f"{r.id} ({r.outcome}): " + "; ".join(r.unexpected or [r.message]) + f" [artifacts: {r.artifacts}]")
