"""Build the CPUID probe (guests/probe) into the rig's content-addressed cache.

:func:`build_probe` runs the probe's Makefile with the system gcc/as/ld into
``<cache>/probe/<digest>/`` where the digest covers every source file of the
probe and the toolchain's version lines; when that directory is complete
already, nothing runs.  The build is deterministic (same sources and
toolchain, same bytes), so a digest names exactly one set of artefacts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from . import cache

#: source files that make up the probe (everything else in the folder is docs)
SOURCE_SUFFIXES = (".c", ".h", ".S", ".ld")
SOURCE_NAMES = ("Makefile",)
ARTIFACTS = ("probe.elf", "probe.img", "probe-user")
TOOLS = ("gcc", "ld", "objcopy", "make", "truncate")


class ProbeBuildError(RigError):
    pass


@dataclass(frozen=True)
class ProbeArtifacts:
    """The three forms of the probe; ``digest`` names the sources + toolchain."""

    pvh: Path  # probe.elf: PVH ELF for -kernel (microvm, pc, q35)
    bootsector: Path  # probe.img: raw disk image for SeaBIOS (pc, q35)
    user: Path  # probe-user: static Linux program (mode "user")
    digest: str

    @property
    def directory(self) -> Path:
        return self.pvh.parent


def probe_source_dir() -> Path:
    """``$RIG_PROBE_SRC`` or ``guests/probe`` of the source tree this package runs from."""
    if v := os.environ.get("RIG_PROBE_SRC"):
        src = Path(v)
    else:
        src = Path(__file__).resolve().parents[2] / "guests" / "probe"
    if not (src / "Makefile").is_file():
        raise ProbeBuildError(
            f"probe sources not found: {src}/Makefile is missing",
            hint="run from a source checkout (pip install -e .) or set RIG_PROBE_SRC to guests/probe",
        )
    return src


def source_files(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.is_file() and (p.suffix in SOURCE_SUFFIXES or p.name in SOURCE_NAMES))


def _tool_version(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise ProbeBuildError(f"cannot build the probe: {tool} not found on PATH", hint="install gcc, binutils and make")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProbeBuildError(f"cannot run {exe} --version: {e}") from None
    return out.splitlines()[0] if out else tool


def source_digest(src: Path | None = None) -> str:
    """Digest of the probe sources plus the gcc and ld version lines."""
    src = src or probe_source_dir()
    files = source_files(src)
    parts: list[str | bytes] = [_tool_version("gcc"), _tool_version("ld")]
    for p in files:
        parts += [p.name, p.read_bytes()]
    return cache.digest(parts)


def _artifacts(d: Path, digest: str) -> ProbeArtifacts:
    return ProbeArtifacts(pvh=d / "probe.elf", bootsector=d / "probe.img", user=d / "probe-user", digest=digest)


def run_make(src: Path, out: Path, *, timeout: float = 600) -> None:
    """``make -C src O=out``; failure is a :class:`ProbeBuildError` carrying make's last lines."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise ProbeBuildError(f"cannot build the probe: {tool} not found on PATH", hint="install gcc, binutils, make")
    out.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["make", "-s", "-C", str(src), f"O={out}", "all"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"},
        )
    except subprocess.TimeoutExpired:
        raise ProbeBuildError(f"probe build in {out} took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ProbeBuildError(f"probe build failed (make -C {src} O={out}): {tail}")
    for name in ARTIFACTS:
        if not (out / name).is_file():
            raise ProbeBuildError(f"probe build in {out} did not produce {name}")


def build_probe(out_dir: Path | None = None) -> ProbeArtifacts:
    """Build the probe; return its artefacts.

    With ``out_dir``, build there (always runs make, which is itself
    incremental).  Without, build into ``<cache>/probe/<digest>/`` and reuse
    that directory when it is complete.
    """
    src = probe_source_dir()
    digest = source_digest(src)
    if out_dir is not None:
        run_make(src, Path(out_dir))
        return _artifacts(Path(out_dir), digest)
    final = cache.entry_dir("probe", digest)
    if cache.is_complete(final):
        return _artifacts(final, digest)
    with cache.building("probe", digest) as tmp:
        tmp.chmod(0o755)
        run_make(src, tmp)
        # keep only the artefacts (intermediate objects are not needed to boot)
        for p in tmp.iterdir():
            if p.name not in ARTIFACTS:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    return _artifacts(final, digest)
