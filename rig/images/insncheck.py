"""Build guests/insncheck (static Linux program) into the rig cache.

Content-addressed by the source and the compiler's version line, so a re-run
is a lookup.  Plain ``gcc -static``: the ISA extensions are only in inline asm.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import RigError
from . import cache

SOURCE_DIR = Path(__file__).resolve().parents[2] / "guests" / "insncheck"
CFLAGS = ("-static", "-O1", "-Wall", "-Wextra", "-Werror")


class InsncheckBuildError(RigError):
    pass


def _compiler_id(cc: str) -> str:
    if shutil.which(cc) is None:
        raise InsncheckBuildError(f"{cc} not found", hint="install gcc and libc6-dev")
    return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def build_insncheck(cc: str = "gcc", source_dir: Path = SOURCE_DIR) -> Path:
    """Path to the built static ``insncheck`` binary."""
    src = source_dir / "insncheck.c"
    if not src.is_file():
        raise InsncheckBuildError(f"{src} not found")
    key = cache.digest(["insncheck/1", _compiler_id(cc), " ".join(CFLAGS), src.read_bytes()])
    final = cache.entry_dir("insncheck", key)
    if cache.is_complete(final):
        return final / "insncheck"
    with cache.building("insncheck", key) as tmp:
        proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp / "insncheck"), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["(no message)"]
            raise InsncheckBuildError(f"compiling {src} failed: {lines[0]}")
    return final / "insncheck"
