"""``rig images build probe|linux`` and ``rig images list`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.cli import main
from rig.images.linux import build_linux_image

pytestmark = pytest.mark.e2e


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_build_probe_into_a_fresh_cache_then_no_op(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path / "cache"))
    rc, out, _ = run(capsys, "images", "build", "probe", "--json")
    assert rc == 0
    info = json.loads(out)
    d = Path(info["dir"])
    assert d.parent.parent == tmp_path / "cache" and d.parent.name == "probe"
    for key in ("pvh", "bootsector", "user"):
        assert Path(info[key]).is_file()
    stamp = (d / ".complete").stat().st_mtime_ns
    rc, out2, _ = run(capsys, "images", "build", "probe", "--json")
    assert rc == 0 and json.loads(out2) == info
    assert (d / ".complete").stat().st_mtime_ns == stamp  # nothing was rebuilt
    rc, listing, _ = run(capsys, "images", "list")
    assert rc == 0 and info["digest"] in listing and "probe" in listing
    rc, js, _ = run(capsys, "images", "list", "--json")
    assert [e["kind"] for e in json.loads(js)["entries"]] == ["probe"]


def test_build_linux_prints_the_cached_image(capsys):
    img = build_linux_image("6.1")
    rc, out, _ = run(capsys, "images", "build", "linux", "--kernel", "6.1", "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["dir"] == str(img.directory) and info["release"] == img.release
    rc, text, _ = run(capsys, "images", "build", "linux", "--kernel", "6.1")
    assert rc == 0 and str(img.directory) in text and img.release in text


def test_unknown_kernel_is_one_line_error(capsys):
    rc, out, err = run(capsys, "images", "build", "linux", "--kernel", "9.9")
    assert rc == 2 and out == ""
    assert err.startswith("rig: error: no Debian cloud-amd64 kernel") and "matches '9.9'" in err
    assert len(err.strip().splitlines()) == 1
