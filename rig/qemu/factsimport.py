"""``rig qemu facts import QEMU_SOURCE_DIR``: exact model facts for a QEMU series the rig does not ship.

A binary whose series has no facts is modelled with the nearest older series'
facts, and every prediction says so.  With the QEMU source tree the binary was
built from, this generates the same two files the rig ships per series
(:mod:`rig.qemu.srcfacts`: CPU feature words, dependencies, XSAVE components,
model levels; :mod:`rig.qemu.machinefacts`: versioned machine types' CPU compat
properties) into the user store (:func:`rig.qemu.facts.user_store`), beside
the shipped ones.  Shipped facts of a series take precedence over imported ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from . import machinefacts, srcfacts
from .facts import _shipped_series, user_store


class FactsImportError(RigError):
    pass


@dataclass(frozen=True)
class Imported:
    series: str
    version: str
    store: Path
    files: tuple[Path, ...]
    words: int
    models: int
    machines: int
    shipped: bool   # the rig ships facts of this series (they take precedence)


def source_version(src: Path) -> str:
    """``10.2.2`` from the tree's VERSION file."""
    vf = src / "VERSION"
    if not (src / "target/i386/cpu.c").is_file():
        raise FactsImportError(f"{src} is not a QEMU source tree (no target/i386/cpu.c)",
                               hint="give the top directory of the QEMU source the binary was built from")
    if not vf.is_file():
        raise FactsImportError(f"{src}/VERSION is missing", hint="give the series with --series X.Y")
    text = vf.read_text().strip()
    if not re.fullmatch(r"\d+\.\d+(\.\d+)*", text):
        raise FactsImportError(f"{vf}: {text!r} is not a version like 10.2.2")
    return text


def import_facts(src: Path, *, series: str | None = None, store: Path | None = None) -> Imported:
    version = source_version(src) if series is None else series
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise FactsImportError(f"series {version!r} is not like 10.2")
    key = f"{m.group(1)}.{m.group(2)}"
    store = store or user_store()
    facts = srcfacts.extract(src, key)
    machines = machinefacts.extract(src)
    store.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in ((f"qemu-{key}.toml", srcfacts.to_toml(facts, f"{src.name}, QEMU {version}")),
                       (f"machines-{key}.toml", machinefacts.to_toml(machines, key, f"{src.name}, QEMU {version}"))):
        p = store / name
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(p)
        out.append(p)
    shipped = (int(m.group(1)), int(m.group(2))) in _shipped_series()
    return Imported(key, version, store, tuple(out), len(facts.words), len(facts.models), len(machines), shipped)


def debian_source(version: str, suites: tuple[str, ...] = ("sid",)) -> Path:
    """The unpacked Debian source of ``qemu`` at ``version`` (e.g. ``1:10.2.2+ds-1``), downloaded once with
    ``apt-get source`` into ``<cache>/qemu-source/`` (Debian patches applied)."""
    from ..images.cache import cache_root, digest
    from ..images.suite_root import SuiteApt

    dest = cache_root() / "qemu-source" / digest([version, *suites])
    tree = dest / "src"
    if (tree / "VERSION").is_file():
        return tree
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    return SuiteApt.for_suites(suites, sources=True).source("qemu", version, dest)
