"""The layering contracts ([tool.importlinter] in pyproject.toml) hold, and break when a layer is crossed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or pytest.skip("import-linter is not installed (test extra: pip install import-linter)")
    return subprocess.run([exe, "--no-cache", str(REPO / "pyproject.toml")], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)


def test_contracts_hold():
    r = lint_imports(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("rig/report/summary.py", "from ..run import rundir", "report and history do not import run"),
    ("rig/cpuid/table.py", "from .. import results", "cpuid is the base"),
    ("rig/results.py", "from .run import rundir", "no import cycles inside rig/"),
])
def test_a_crossed_layer_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(REPO / "rig", tmp_path / "rig", ignore=shutil.ignore_patterns("__pycache__"))
    p = tmp_path / module
    p.write_text(p.read_text() + f"\n{line}  # noqa\n")
    r = lint_imports(tmp_path)
    verdicts = {m["name"]: m["verdict"] for m in re.finditer(r"^(?P<name>.+?) ?(?P<verdict>KEPT|BROKEN)\b", r.stdout,
                                                                 re.MULTILINE)}
    assert r.returncode == 1, r.stdout + r.stderr
    assert [name for name, v in verdicts.items() if v == "BROKEN" and name.startswith(broken)], r.stdout
