"""The rig installed without its source tree: a wheel built from this tree carries the image recipes.

Builds a wheel (setuptools, no network: --no-build-isolation) from a copy of the tree, unpacks it into
a directory of its own and loads every recipe from there, in a process whose working directory and
module path hold no source tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = ("kernels.toml", "l1.toml", "linux.toml", "qemu.toml", "ssh_image.toml")

LOADERS = f"""
import json, rig
from rig.images import recipes
from rig.images.kernel import load_recipe as kernels
from rig.images.l1 import load_recipe as l1
from rig.images.linux import load_recipe as linux
from rig.images.qemu import load_recipes as qemu
from rig.images.ssh import SshImageRecipe
kernels(); l1(); linux(); qemu(); SshImageRecipe.load()
print(json.dumps({{"rig": rig.__file__, "paths": [str(recipes.recipe_path(n)) for n in {RECIPES!r}]}}))
"""


def test_source_tree_recipes_are_the_top_level_images_dir():
    from rig.images.recipes import recipe_path

    for name in RECIPES:
        assert recipe_path(name) == REPO / "images" / name


def test_wheel_carries_the_recipes(tmp_path):
    pytest.importorskip("wheel", reason="building a wheel needs the 'wheel' package (test extra)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(REPO / name, src / name)
    for d in ("rig", "images"):
        shutil.copytree(REPO / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(dist)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"rig/images/recipes/{n}" for n in RECIPES} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-c", LOADERS], capture_output=True, text=True, cwd=empty,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert Path(got["rig"]).is_relative_to(site)
    assert [Path(p) for p in got["paths"]] == [site / "rig" / "images" / "recipes" / n for n in RECIPES]
