"""The linux guest image: a Debian cloud kernel + busybox-static + the user-mode probe in an initramfs.

:func:`build_linux_image` fetches the kernel (:func:`rig.images.kernel.fetch_kernel`)
and busybox-static (:func:`fetch_busybox`, ``apt-get download`` through
:class:`rig.images.debian.DebianArchive`) and builds the probe
(:func:`rig.images.probe.build_probe`). It then writes a deterministic
initramfs (:mod:`rig.images.initramfs`) with ``/init`` from ``guests/linux/init``.
The entry ``<cache>/linux/<digest>/`` holds ``vmlinuz`` (the Debian bzImage),
``vmlinux`` (its uncompressed ELF, booted through its PVH note),
``initrd.img`` (an uncompressed newc archive) and ``linux.json``. The digest covers the kernel packages and every byte of the
initramfs, so a second build with the same inputs finds the entry and does
nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RigError
from . import cache
from . import initramfs as ir
from .debian import DebianArchive, DebianError
from .kernel import DebianKernel, fetch_kernel
from .recipes import read_recipe

KIND = "linux"
BUSYBOX_KIND = "busybox"

#: where things sit inside the guest (guests/linux/init relies on these)
GUEST_PROBE = "bin/probe-user"
GUEST_BUSYBOX = "bin/busybox"


class LinuxImageError(RigError):
    pass


@dataclass(frozen=True)
class LinuxRecipe:
    default_kernel: str
    busybox_package: str
    busybox_suite: str
    init: Path
    boot: dict[str, Any]


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def load_recipe(path: Path | None = None) -> LinuxRecipe:
    """Read ``images/linux.toml`` (or ``path``)."""
    try:
        text = path.read_text() if path else read_recipe("linux.toml")
        d = tomllib.loads(text)
        return LinuxRecipe(
            default_kernel=str(d["default_kernel"]),
            busybox_package=str(d["busybox_package"]),
            busybox_suite=str(d["busybox_suite"]),
            init=project_root() / d["init"],
            boot=dict(d["boot"]),
        )
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
        raise LinuxImageError(f"{path or 'images/linux.toml'}: bad linux guest recipe: {e}") from e


@dataclass(frozen=True)
class LinuxImage:
    """A built linux guest: boot ``vmlinuz`` with ``initrd``."""

    release: str  # the kernel's uname -r
    vmlinuz: Path  # the Debian bzImage (for machines that boot through firmware: pc, q35)
    initrd: Path  # uncompressed newc archive
    digest: str
    kernel_packages: tuple[str, ...] = ()
    busybox_version: str = ""
    probe_digest: str = ""

    @property
    def directory(self) -> Path:
        return self.initrd.parent

    @property
    def vmlinux(self) -> Path:
        """The uncompressed kernel ELF with its PVH note (boots on microvm without decompression)."""
        return self.directory / "vmlinux"


# ------------------------------------------------------------------ busybox


def _busybox_from(entry: Path) -> tuple[Path, str]:
    meta = json.loads((entry / "busybox.json").read_text())
    return entry / "busybox", str(meta["version"])


def cached_busybox() -> list[tuple[Path, str]]:
    base = cache.cache_root() / BUSYBOX_KIND
    out = []
    for entry in sorted(base.glob("*")) if base.is_dir() else []:
        if cache.is_complete(entry):
            try:
                out.append(_busybox_from(entry))
            except (OSError, ValueError, KeyError):
                continue
    return out


def fetch_busybox(recipe: LinuxRecipe | None = None, archive: DebianArchive | None = None) -> tuple[Path, str]:
    """The static busybox binary of the recipe's package and suite, and its package version.

    Downloaded once with ``apt-get download`` and unpacked into
    ``<cache>/busybox/<digest>/busybox``. Offline, a cached one is used.
    """
    recipe = recipe or load_recipe()
    pkg, suite = recipe.busybox_package, recipe.busybox_suite
    try:
        archive = archive or DebianArchive.default()
        versions = [v for v in archive.versions(pkg) if v.suite == suite] or archive.versions(pkg)
    except DebianError as e:
        have = cached_busybox()
        if have:
            return have[-1]
        raise LinuxImageError(f"cannot fetch {pkg}: {e}", hint="network to the Debian archive is needed once") from e
    if not versions:
        raise LinuxImageError(f"{pkg} is not in the configured suites", hint="check the apt sources of this machine")
    version = versions[0].version
    key = cache.digest([BUSYBOX_KIND, pkg, version])
    entry = cache.entry_dir(BUSYBOX_KIND, key)
    if cache.is_complete(entry):
        return _busybox_from(entry)
    with cache.building(BUSYBOX_KIND, key) as tmp:
        deb = archive.download(pkg, dest=tmp / "debs", version=version)
        root = archive.extract(deb, tmp / "root")
        found = [p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.is_file()]
        if not found:
            raise LinuxImageError(f"{deb.name}: no bin/busybox inside")
        shutil.copy2(found[0], tmp / "busybox")
        shutil.rmtree(tmp / "debs")
        shutil.rmtree(root)
        (tmp / "busybox.json").write_text(json.dumps({"package": pkg, "version": version, "suite": suite}) + "\n")
    return _busybox_from(entry)


def busybox_entries(busybox: Path) -> list[ir.Entry]:
    """busybox at /bin/busybox plus a symlink per applet at the path ``--list-full`` gives."""
    if ir.shared_libraries(busybox):
        raise LinuxImageError(f"{busybox} is not a static binary", hint="busybox-static is needed")
    try:
        proc = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LinuxImageError(f"cannot run {busybox} --list-full: {e}") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        raise LinuxImageError(f"{busybox} --list-full failed", hint="delete it from the cache and build again")
    out = [ir.file(GUEST_BUSYBOX, busybox, 0o755)]
    for applet in sorted(set(proc.stdout.split())):
        if applet in (GUEST_BUSYBOX, "linuxrc"):
            continue
        out.append(ir.symlink(applet, "/" + GUEST_BUSYBOX))
    return out


# ------------------------------------------------------------------ image


def initramfs_entries(recipe: LinuxRecipe, busybox: Path, probe_user: Path) -> list[ir.Entry]:
    entries = busybox_entries(busybox)
    try:
        init = recipe.init.read_bytes()
    except OSError as e:
        raise LinuxImageError(f"{recipe.init}: cannot read ({e.strerror})", hint="run from a source checkout") from e
    entries.append(ir.file("init", init, 0o755))
    entries.append(ir.file(GUEST_PROBE, probe_user, 0o755))
    for d in ("proc", "sys", "dev", "tmp", "run"):
        entries.append(ir.directory(d))
    entries.append(ir.chardev("dev/console", 5, 1))
    return entries


def _load(entry: Path) -> LinuxImage:
    try:
        meta = json.loads((entry / "linux.json").read_text())
        return LinuxImage(
            release=meta["release"],
            vmlinuz=entry / "vmlinuz",
            initrd=entry / "initrd.img",
            digest=entry.name,
            kernel_packages=tuple(meta.get("kernel_packages", ())),
            busybox_version=meta.get("busybox", ""),
            probe_digest=meta.get("probe", ""),
        )
    except (OSError, ValueError, KeyError) as e:
        raise LinuxImageError(f"{entry}: unreadable linux image entry ({e})", hint="delete it and build again") from e


def cached_images() -> list[LinuxImage]:
    base = cache.cache_root() / KIND
    out = []
    for entry in sorted(base.glob("*")) if base.is_dir() else []:
        if cache.is_complete(entry):
            try:
                out.append(_load(entry))
            except LinuxImageError:
                continue
    return out


def build_linux_image(
    kernel: str | DebianKernel | None = None,
    *,
    recipe: LinuxRecipe | None = None,
    archive: DebianArchive | None = None,
) -> LinuxImage:
    """Build (or find in the cache) the linux guest for ``kernel`` (a version request such as
    ``"6.1"``, ``"7.3"``, ``"newest"``, a full release, or a fetched :class:`DebianKernel`)."""
    from .probe import build_probe

    recipe = recipe or load_recipe()
    if not isinstance(kernel, DebianKernel):
        kernel = fetch_kernel(kernel or recipe.default_kernel, archive)
    busybox, bb_version = fetch_busybox(recipe, archive)
    probe = build_probe()
    entries = initramfs_entries(recipe, busybox, probe.user)
    # the kernel is named by its packages (name=version); the initramfs by every byte that goes in
    parts: list[str | bytes] = [KIND, "initrd=newc", kernel.release, *kernel.packages]
    for e in ir.complete(entries):
        parts += [e.path, e.kind, str(e.mode), e.content(), f"{e.major}:{e.minor}"]
    key = cache.digest(parts)
    entry = cache.entry_dir(KIND, key)
    if cache.is_complete(entry):
        return _load(entry)
    vmlinux = kernel.vmlinux()
    with cache.building(KIND, key) as tmp:
        tmp.chmod(0o755)
        sha = ir.write_initramfs(entries, tmp / "initrd.img", compress=False)
        for src, name in ((kernel.vmlinuz, "vmlinuz"), (vmlinux, "vmlinux")):
            try:
                os.link(src, tmp / name)
            except OSError:
                shutil.copyfile(src, tmp / name)
        meta = {
            "release": kernel.release,
            "kernel_packages": list(kernel.packages),
            "busybox": bb_version,
            "probe": probe.digest,
            "initrd_sha256": sha,
            "entries": len(ir.complete(entries)),
        }
        (tmp / "linux.json").write_text(json.dumps(meta, indent=2) + "\n")
    return _load(entry)
