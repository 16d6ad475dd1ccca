"""pytest plugin: run rig matrices as pytest tests (one test per case), so CI gets JUnit from pytest too.

Options: ``--matrix PATH`` (repeatable; default ``matrices/smoke.toml`` of the source tree) and
``--rig-out DIR`` (where the run directory goes; default a pytest temporary directory).  The test
module ``tests/e2e/test_matrix.py`` uses the ``rig_case`` parameter this plugin generates::

    pytest tests/e2e/test_matrix.py --matrix matrices/smoke.toml --junitxml=rig.xml

Outside this source tree load it with ``-p rig.run.pytest_plugin``.  Each test fails with the case's
unexpected findings as its message; the run directory (artifacts, report.html) is printed at the end.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ..errors import RigError

DEFAULT_MATRIX = Path(__file__).resolve().parents[2] / "matrices" / "smoke.toml"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("rig", "kvm-cpuid-rig matrices")
    g.addoption("--matrix", action="append", metavar="PATH", help="matrix file to run as tests (repeatable)")
    g.addoption("--rig-out", metavar="DIR", help="directory for the run directories (default: pytest's tmp)")


class _Runs:
    """One run directory and context per matrix, created on first use."""

    def __init__(self, config: pytest.Config, base: Path) -> None:
        self.config = config
        self.base = base
        self.ctx: dict[str, object] = {}
        self.written: list[Path] = []

    def context(self, matrix):
        from ..images.probe import build_probe
        from .context import RunContext
        from .rundir import RunDir, RunInfo

        key = str(matrix.path)
        if key not in self.ctx:
            rd = RunDir.create(self.base / f"{matrix.name}-{os.getpid()}", matrix.name)
            rd.write_info(RunInfo(matrix=str(matrix.path), matrix_name=matrix.name, started_at="", argv=["pytest"]))
            self.ctx[key] = RunContext(matrix, rd, build_probe())
        return self.ctx[key]

    def finish(self) -> None:
        from ..report.write import write_reports

        for ctx in self.ctx.values():
            paths = write_reports(ctx.rundir)  # type: ignore[attr-defined]
            ctx.rundir.close()  # type: ignore[attr-defined]
            self.written.append(paths.html)


def matrix_params(config: pytest.Config) -> list:
    """(matrix, case) params for every case of the selected matrices; a skip param when they cannot expand."""
    from ..matrix.expand import expand
    from ..matrix.load import load_matrix

    paths = config.getoption("--matrix") or [str(DEFAULT_MATRIX)]
    params = []
    for p in paths:
        try:
            m = load_matrix(p)
            cases = expand(m)
        except RigError as e:
            params.append(pytest.param(None, None, id=Path(p).stem,
                                       marks=pytest.mark.skip(reason=f"matrix {p} cannot be expanded here: {e}")))
            continue
        params += [pytest.param(m, c, id=c.id) for c in cases]
    return params


@pytest.fixture(scope="session")
def rig_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    out = request.config.getoption("--rig-out")
    base = Path(out) if out else tmp_path_factory.mktemp("rig-runs")
    runs = _Runs(request.config, base)
    yield runs
    runs.finish()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for p in runs.written:
            reporter.write_line(f"rig report: {p}")


def run_one(runs: _Runs, matrix, case):
    from .execute import run_case

    ctx = runs.context(matrix)
    result = asyncio.run(run_case(ctx, case))
    ctx.rundir.append(result)
    return result
