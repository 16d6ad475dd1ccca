"""Packaging hook (metadata is in pyproject.toml): the image recipes of the top-level ``images/`` directory
go into the wheel as ``rig/images/recipes/`` (rig.images.recipes finds them there when the rig is
installed without its source tree)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithRecipes(build_py):
    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "rig" / "images" / "recipes"
        dest.mkdir(parents=True, exist_ok=True)
        for recipe in sorted((HERE / "images").glob("*.toml")):
            shutil.copyfile(recipe, dest / recipe.name)


setup(cmdclass={"build_py": BuildWithRecipes})
