"""``rig qemu facts import``: exact facts from a real QEMU source tree into a user store, and what changes.

The tree is Debian's QEMU 10.2.2 source (``apt-get source``, cached), imported into a
temporary store.  The rig ships 10.2's facts made from the same source: the import
reproduces them byte for byte (apart from the header), and with the shipped ones
out of the way the model finds the imported ones instead of the nearest older series.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.errors import RigError
from rig.qemu.facts import version_data

pytestmark = pytest.mark.e2e

SOURCE = "1:10.2.2+ds-1"


@pytest.fixture(scope="module")
def source_tree() -> Path:
    from rig.qemu.factsimport import debian_source

    try:
        return debian_source(SOURCE)
    except RigError as e:
        pytest.skip(f"Debian source qemu={SOURCE} not available here: {e}")


def test_import_into_a_user_store_is_used(source_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "RIG_QEMU_FACTS_DIR": str(store), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "rig.cli", "qemu", "facts", "import", str(source_tree)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "QEMU 10.2.2:" in out.stdout and "versioned machine types" in out.stdout
    assert (store / "qemu-10.2.toml").is_file() and (store / "machines-10.2.toml").is_file()
    assert "note: the rig ships facts of QEMU 10.2" in out.stdout
    shipped = Path(__file__).resolve().parents[2] / "rig/qemu/data"
    for name in ("qemu-10.2.toml", "machines-10.2.toml"):
        body = [ln for ln in (store / name).read_text().splitlines() if not ln.startswith("#")]
        assert body == [ln for ln in (shipped / name).read_text().splitlines() if not ln.startswith("#")], name
    import rig.qemu.facts as facts_mod

    monkeypatch.setenv("RIG_QEMU_FACTS_DIR", str(store))
    monkeypatch.setattr(facts_mod, "_shipped_series", lambda: ((7, 2), (10, 0)))  # as if 10.2 were not shipped
    data = version_data("10.2.2")
    assert data.series == "10.2" and not data.approximate and data.origin == str(store)
    # facts read from the tree itself: QEMU 10.2's source has these (10.0's has not)
    text = (source_tree / "hw/i386/pc.c").read_text()
    assert "pc_compat_10_1[]" in text and "pc-q35-10.2" in data.machines and "pc-q35-10.1" in data.machines
    assert ("x86_64-cpu", "x-arch-cap-always-on", "true") in data.machines["pc-q35-10.0"].compat
    assert ("x86_64-cpu", "x-arch-cap-always-on", "true") not in data.machines["pc-q35-10.1"].compat
    listed = subprocess.run([sys.executable, "-m", "rig.cli", "qemu", "facts", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "10.0  shipped" in listed.stdout and "10.2  shipped" in listed.stdout
    # a newer binary's series now rests on the imported facts, and says so
    newer = version_data("11.1.3")
    assert newer.series == "10.2" and any("QEMU 11.1 has no CPU-model facts" in a for a in newer.approximations())


def test_import_refuses_what_is_not_a_qemu_tree(tmp_path: Path) -> None:
    env = {**os.environ, "RIG_QEMU_FACTS_DIR": str(tmp_path / "s"), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "rig.cli", "qemu", "facts", "import", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "is not a QEMU source tree" in out.stderr
    assert not (tmp_path / "s").exists()
