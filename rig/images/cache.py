"""The rig's cache: built images and downloaded packages, outside the source tree.

Root: ``$RIG_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/kvm-cpuid-rig``, else
``~/.cache/kvm-cpuid-rig``.  Built artefacts live in content-addressed
directories ``<root>/<kind>/<digest>/``; a directory is complete once its
``.complete`` marker exists, so an interrupted build is redone, never reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    if v := os.environ.get("RIG_CACHE_DIR"):
        return Path(v)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvm-cpuid-rig"


def digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def digest_files(paths: Iterable[Path], base: Path) -> str:
    parts: list[str | bytes] = []
    for p in sorted(paths):
        parts.append(str(p.relative_to(base)))
        parts.append(p.read_bytes())
    return digest(parts)


def entry_dir(kind: str, key: str) -> Path:
    return cache_root() / kind / key


def is_complete(d: Path) -> bool:
    return (d / ".complete").exists()


@contextmanager
def building(kind: str, key: str):
    """Yield a temporary directory; on success it becomes ``entry_dir(kind, key)`` atomically."""
    final = entry_dir(kind, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        yield tmp
        (tmp / ".complete").write_text("")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
