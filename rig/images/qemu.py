"""QEMU builds beside the system's: ``fetch_qemu("7.2" | "system" | "10.0")``.

"system" (and the system's own major.minor, 7.2 on bookworm) is the installed
``qemu-system-x86_64``.  Other versions are unpacked from Debian packages
(recipes in ``data/qemu.toml``) into a content-addressed cache prefix keyed by
the package versions; a second call finds the entry.  See the data file for why
the binary is started through a launcher script (``QEMU_MODULE_DIR``).

:class:`QemuInstall` fields: ``binary`` is what to execute on this machine
(the launcher for unpacked builds), ``firmware_dir`` goes to ``-L`` (None for
the system build), ``elf`` is the real executable (for copying into an
initramfs with its libraries), ``module_dir`` its modules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RigError
from . import cache
from .debian import DebianArchive, DebianError
from .recipes import read_recipe

KIND = "qemu"
_VERSION_RE = re.compile(r"QEMU emulator version (\d+\.\d+(?:\.\d+)?)")


class QemuFetchError(RigError):
    pass


@dataclass(frozen=True)
class QemuInstall:
    binary: Path
    firmware_dir: Path | None
    version: str
    elf: Path | None = None
    module_dir: Path | None = None
    prefix: Path | None = None
    packages: tuple[str, ...] = ()

    @property
    def series(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def argv_prefix(self) -> list[str]:
        """``[binary, -L firmware_dir]``: start of every command line for this build."""
        argv = [str(self.binary)]
        if self.firmware_dir is not None:
            argv += ["-L", str(self.firmware_dir)]
        return argv

    def env(self) -> dict[str, str]:
        """Environment additions needed when running :attr:`elf` directly."""
        return {"QEMU_MODULE_DIR": str(self.module_dir)} if self.module_dir else {}


def load_recipes(path: Path | None = None) -> dict[str, Any]:
    try:
        text = path.read_text() if path else read_recipe("qemu.toml")
        return tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise QemuFetchError(f"{path or 'images/qemu.toml'}: bad QEMU recipe: {e}") from e


def binary_version(binary: Path, *, env: dict[str, str] | None = None) -> str:
    """Run ``binary --version`` and return ``"10.0.2"``; a clear error when it does not start."""
    try:
        proc = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30,
            env={**os.environ, **(env or {})},
        )
    except OSError as e:
        raise QemuFetchError(f"{binary}: cannot execute ({e.strerror})", hint="check the file and its libraries with ldd") from e
    except subprocess.TimeoutExpired as e:
        raise QemuFetchError(f"{binary}: --version did not answer within 30 s") from e
    m = _VERSION_RE.search(proc.stdout)
    if proc.returncode != 0 or not m:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise QemuFetchError(
            f"{binary} does not start: {last}",
            hint="missing shared libraries? run ldd on it; this build may need a newer Debian than the machine's",
        )
    return m.group(1)


def _system(recipes: dict[str, Any], request: str) -> QemuInstall:
    sysrec = recipes.get("system", {})
    found = shutil.which("qemu-system-x86_64") or sysrec.get("binary", "/usr/bin/qemu-system-x86_64")
    binary = Path(found)
    if not binary.exists():
        raise QemuFetchError(f"{binary}: system QEMU not installed", hint="apt-get install qemu-system-x86")
    version = binary_version(binary)
    if request not in ("system", "") and not (version == request or version.startswith(request + ".")):
        raise QemuFetchError(f"system QEMU {binary} is {version}, not {request}", hint="pick a version with a recipe in images/qemu.toml")
    return QemuInstall(binary=binary, firmware_dir=None, version=version, elf=binary)


def _load_entry(entry: Path) -> QemuInstall:
    try:
        meta = json.loads((entry / "qemu.json").read_text())
    except (OSError, ValueError) as e:
        raise QemuFetchError(f"{entry}: unreadable QEMU cache entry ({e})", hint="delete the directory and fetch again") from e
    root = entry / "root"
    return QemuInstall(
        binary=entry / "bin" / "qemu-system-x86_64",
        firmware_dir=entry / "firmware",
        version=meta["version"],
        elf=root / meta["binary"],
        module_dir=root / meta["module_dir"],
        prefix=root,
        packages=tuple(meta["packages"]),
    )


def cached_qemus() -> list[QemuInstall]:
    base = cache.cache_root() / KIND
    out = []
    for entry in sorted(base.glob("*")) if base.is_dir() else []:
        if cache.is_complete(entry) and (entry / "qemu.json").exists():
            try:
                out.append(_load_entry(entry))
            except QemuFetchError:
                continue
    return out


def _launcher_text(elf: Path, module_dir: Path, loader: list[str] | None = None) -> str:
    """A shell script that runs ``elf`` with its own modules (and, for a build with a root of its
    own suite, through that root's dynamic loader: ``loader`` is the command before the ELF)."""
    run = " ".join(f"'{a}'" for a in (loader or [str(elf)]))
    return (
        "#!/bin/sh\n"
        "# written by rig.images.qemu: run this QEMU with its own modules"
        + (" and its own suite's libraries\n" if loader else "\n")
        + f"QEMU_MODULE_DIR='{module_dir}'\n"
        "export QEMU_MODULE_DIR\n"
        f"exec {run} \"$@\"\n"
    )


def _merge_firmware(root: Path, dirs: list[str], out: Path) -> None:
    """One directory of relative symlinks; earlier source directories win."""
    out.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        src = root / d
        if not src.is_dir():
            continue
        for f in sorted(src.iterdir()):
            link = out / f.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.relpath(f, out))


def fetch_qemu(version: str, archive: DebianArchive | None = None, *,
               log: Callable[[str], None] | None = None) -> QemuInstall:
    """The QEMU for ``version``: the system one, or an unpacked Debian build from the cache
    (built on first use; ``rig images build qemu VERSION`` does it ahead of time)."""
    recipes = load_recipes()
    sysrec = recipes.get("system", {})
    if version in ("system", "") or version in sysrec.get("aliases", []):
        return _system(recipes, version)
    rec = recipes.get("versions", {}).get(version)
    if rec is None:
        known = sorted([*sysrec.get("aliases", []), *recipes.get("versions", {})])
        raise QemuFetchError(f"no recipe for QEMU {version!r} (known: {', '.join(known)})", hint="add one to images/qemu.toml")
    if rec.get("root_suites"):
        return _fetch_with_root(version, rec, log=log)
    suite = rec["suite"]
    try:
        archive = archive or DebianArchive.default()
        pkgs = []
        for name in rec["packages"]:
            vs = [v for v in archive.versions(name) if v.suite == suite]
            if not vs:
                raise QemuFetchError(f"{name} is not in {suite}", hint="fix images/qemu.toml")
            pkgs.append((name, vs[0].version))
    except DebianError as e:
        return _cached_or_raise(version, e)
    key = cache.digest(["qemu", rec["binary"], *(f"{n}={v}" for n, v in pkgs)])
    entry = cache.entry_dir(KIND, key)
    if cache.is_complete(entry):
        return _load_entry(entry)
    with cache.building(KIND, key) as tmp:
        debs, root = tmp / "debs", tmp / "root"
        for name, ver in pkgs:
            archive.extract(archive.download(name, dest=debs, version=ver), root)
        shutil.rmtree(debs)
        _finish_entry(tmp, entry, root, version, rec, suite, [f"{n}={v}" for n, v in pkgs], loader=False)
    install = _load_entry(entry)
    binary_version(install.binary)  # the launcher works from the final place
    return install


def _cached_or_raise(version: str, err: RigError) -> QemuInstall:
    for q in cached_qemus():
        if q.series == version:
            return q
    raise QemuFetchError(f"cannot resolve QEMU {version}: {err}", hint="network to the Debian archive is needed once") from err


def _fetch_with_root(version: str, rec: dict[str, Any], *, log: Callable[[str], None] | None) -> QemuInstall:
    """A build whose binary needs its own suite's C library: the packages and their whole
    dependency closure unpacked into a root, run through the root's loader (:mod:`.suite_root`)."""
    from .suite_root import SuiteApt, SuiteRootError, unpack

    suites = tuple(rec["root_suites"])
    apt = SuiteApt.for_suites(suites)
    try:
        closure = apt.closure(rec["packages"], rec["suite"])
    except (SuiteRootError, DebianError) as e:
        return _cached_or_raise(version, e)
    pkgs = [f"{n}={v}" for n, v in closure]
    key = cache.digest(["qemu-root", rec["binary"], *suites, *pkgs])
    entry = cache.entry_dir(KIND, key)
    if cache.is_complete(entry):
        return _load_entry(entry)
    say = log or (lambda msg: None)
    with cache.building(KIND, key) as tmp:
        say(f"QEMU {version}: downloading {len(closure)} packages of {'+'.join(suites)} (the binary and its libraries)")
        debs = apt.download(rec["packages"], rec["suite"])
        wanted = {n for n, _ in closure}
        debs = [d for d in debs if d.name.split("_")[0] in wanted]
        say(f"QEMU {version}: unpacking {len(debs)} packages into {entry / 'root'}")
        unpack(debs, tmp / "root", log=say)
        _finish_entry(tmp, entry, tmp / "root", version, rec, rec["suite"], pkgs, loader=True)
    install = _load_entry(entry)
    binary_version(install.binary)
    return install


def _finish_entry(tmp: Path, entry: Path, root: Path, version: str, rec: dict[str, Any], suite: str,
                  packages: list[str], *, loader: bool) -> None:
    from .suite_root import loader_argv

    elf = root / rec["binary"]
    if not elf.is_file():
        raise QemuFetchError(f"{rec['binary']} not in the unpacked {rec['packages'][0]}", hint="fix images/qemu.toml")
    _merge_firmware(root, list(rec.get("firmware", [])), tmp / "firmware")
    # the launcher names the final location, where the entry is about to be renamed to
    final_root = entry / "root"
    launcher = tmp / "bin" / "qemu-system-x86_64"
    launcher.parent.mkdir()
    launcher.write_text(_launcher_text(final_root / rec["binary"], final_root / rec["module_dir"],
                                       loader_argv(final_root, rec["binary"], check=False) if loader else None))
    launcher.chmod(0o755)
    # check the build where it is now (a launcher for the temporary place)
    check = tmp / "bin" / ".check"
    check.write_text(_launcher_text(elf, root / rec["module_dir"], loader_argv(root, rec["binary"]) if loader else None))
    check.chmod(0o755)
    got = binary_version(check)
    check.unlink()
    if not (got == version or got.startswith(version + ".")):
        raise QemuFetchError(f"{elf} reports QEMU {got}, recipe says {version}", hint="fix images/qemu.toml")
    meta = {
        "version": got,
        "suite": suite,
        "packages": packages,
        "binary": rec["binary"],
        "module_dir": rec["module_dir"],
        "own_root": loader,
    }
    (tmp / "qemu.json").write_text(json.dumps(meta, indent=2) + "\n")
