"""Where the image recipes are: ``images/`` at the top of the source tree, or the copy installed with the rig.

The recipes (``kernels.toml``, ``l1.toml``, ``linux.toml``, ``qemu.toml``,
``ssh_image.toml``) say how the guest and host images are built.  They live
beside ``guests/`` in the source tree; building a wheel copies them into the
package as ``rig/images/recipes/`` (``setup.py``'s ``build_py``), so a rig
installed without the source tree finds them there.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RigError

#: the copy installed with the package (wheel), looked at first
INSTALLED = Path(__file__).resolve().parent / "recipes"
#: the source tree's images/ directory
SOURCE = Path(__file__).resolve().parents[2] / "images"


class RecipeNotFound(RigError):
    pass


def recipe_path(name: str) -> Path:
    """The recipe file ``name`` (e.g. ``"linux.toml"``)."""
    for d in (INSTALLED, SOURCE):
        p = d / name
        if p.is_file():
            return p
    raise RecipeNotFound(f"image recipe {name} not found (looked in {INSTALLED} and {SOURCE})",
                         hint="reinstall the rig (pip install kvm-cpuid-rig) or run it from its source tree")


def read_recipe(name: str) -> str:
    return recipe_path(name).read_text()
