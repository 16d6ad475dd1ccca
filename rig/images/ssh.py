"""The "ssh" guest image: a small Debian system with sshd, built with debootstrap.

Two cached stages, each content-addressed (``rig.images.cache``):

1. ``ssh-rootfs/<key>/root``: ``debootstrap --variant=minbase`` of the recipe in
   ``images/ssh_image.toml`` (sshd, the cloud kernel, ip(8); no systemd), an
   initramfs with only the modules that find the root disk and no udev, the
   distribution's generated host keys removed, docs and package lists dropped.
   Slow (1.5-2 min); keyed only by suite, variant, packages and initramfs
   modules, so a new probe build does not redo it.  The downloaded .debs are
   kept in ``ssh-rootfs/debs`` (debootstrap ``--cache-dir``).
2. ``ssh/<key>/``: the bootable image (seconds): a raw ext4 root disk made with
   ``mkfs.ext4 -d`` from a copy of the root tree plus the rig's tools (static
   probe, insncheck) and its PID 1 (``/sbin/rig-init`` from the recipe: network
   for QEMU user networking, then sshd), a fresh ed25519 host key and client key
   pair, the kernel and initrd copied out of ``/boot`` (QEMU boots them with
   ``-kernel/-initrd``: no bootloader), and ``image.json`` describing it all
   (:class:`SshImage`).

The client key and the guest's host key are generated here, once per image,
and recorded: the rig logs in with the one and verifies the other
(rig.guest.ssh).  QEMU always opens the disk with ``snapshot=on``, so the cached
image never changes.

The mirror URI comes from this machine's apt configuration at run time
(:func:`rig.images.debian._debian_uri`), never from the source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import RigError
from . import cache
from .recipes import read_recipe

IMAGE_FORMAT = "rig-ssh-image/1"


class SshImageError(RigError):
    pass


@dataclass(frozen=True)
class SshImageRecipe:
    suite: str
    variant: str
    include: tuple[str, ...]
    slack_mib: int
    append: str
    user: str
    tools_dir: str
    init: str
    initramfs_modules: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None) -> SshImageRecipe:
        where = str(path) if path else "images/ssh_image.toml"
        try:
            text = path.read_text() if path else read_recipe("ssh_image.toml")
            d = tomllib.loads(text)
            return cls(
                suite=str(d["suite"]),
                variant=str(d["variant"]),
                include=tuple(d["include"]),
                slack_mib=int(d["slack_mib"]),
                append=str(d["append"]),
                user=str(d["user"]),
                tools_dir=str(d["tools_dir"]),
                init=str(d["init"]),
                initramfs_modules=tuple(d.get("initramfs_modules", ())),
            )
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise SshImageError(f"{where}: cannot read the ssh image recipe: {e}") from None
        except KeyError as e:
            raise SshImageError(f"{where}: recipe lacks {e.args[0]!r}") from None

    def rootfs_key(self) -> str:
        return cache.digest(
            ["rootfs/4", self.suite, self.variant, ",".join(self.include), ",".join(self.initramfs_modules)]
        )


@dataclass(frozen=True)
class SshImage:
    """A bootable SSH guest: disk, kernel, initrd, login and the host key to expect."""

    dir: Path
    disk: Path
    kernel: Path
    initrd: Path
    key: Path  # private key (OpenSSH format) the rig logs in with
    host_key: str  # expected host public key, "ssh-ed25519 AAAA..."
    user: str
    append: str
    tools_dir: str
    kernel_release: str
    rootfs_seconds: float | None = None
    image_seconds: float | None = None

    @property
    def probe_path(self) -> str:
        return f"{self.tools_dir}/probe-user"

    @property
    def insncheck_path(self) -> str:
        return f"{self.tools_dir}/insncheck"

    def to_json(self) -> dict:
        d = asdict(self)
        d["format"] = IMAGE_FORMAT
        for k in ("dir", "disk", "kernel", "initrd", "key"):
            d[k] = os.path.relpath(d[k], self.dir) if k != "dir" else "."
        return d

    @classmethod
    def load(cls, directory: Path) -> SshImage:
        p = directory / "image.json"
        try:
            d = json.loads(p.read_text())
        except OSError as e:
            raise SshImageError(f"{p}: cannot read: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise SshImageError(f"{p}: not JSON: {e.msg}") from None
        if d.get("format") != IMAGE_FORMAT:
            raise SshImageError(f"{p}: format {d.get('format')!r}, expected {IMAGE_FORMAT!r}")
        try:
            return cls(
                dir=directory,
                disk=directory / d["disk"],
                kernel=directory / d["kernel"],
                initrd=directory / d["initrd"],
                key=directory / d["key"],
                host_key=d["host_key"],
                user=d["user"],
                append=d["append"],
                tools_dir=d["tools_dir"],
                kernel_release=d["kernel_release"],
                rootfs_seconds=d.get("rootfs_seconds"),
                image_seconds=d.get("image_seconds"),
            )
        except KeyError as e:
            raise SshImageError(f"{p}: lacks {e.args[0]!r}") from None


# -- helpers ---------------------------------------------------------------------


def _run(cmd: list[str], what: str, *, log: Callable[[str], None] | None = None, cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise SshImageError(f"{cmd[0]} not found", hint="run scripts/setup.sh")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["(no message)"]
        raise SshImageError(f"{what} failed (exit {proc.returncode}): {lines[-1]}")
    if log:
        log(f"{what}: ok")
    return proc.stdout


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt.startswith(prefix) or mnt == prefix.rstrip("/"):
                out.append(mnt)
    return sorted(out, key=len, reverse=True)


def unmount_under(path: Path) -> None:
    """Lazily unmount everything mounted below ``path`` (debootstrap's /proc, /sys, /dev binds)."""
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def _ed25519_keypair(comment: str) -> tuple[bytes, str]:
    """(private key in OpenSSH PEM, public key line) made with ``cryptography``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    priv = k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub = k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return priv, f"{pub} {comment}"


def _write(path: Path, data: bytes | str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _log_default(msg: str) -> None:
    print(f"rig: ssh image: {msg}", file=sys.stderr)


# -- stage 1: debootstrap -----------------------------------------------------------


def build_rootfs(recipe: SshImageRecipe, *, log: Callable[[str], None] = _log_default) -> tuple[Path, float]:
    """The cached debootstrap tree for ``recipe``; returns (root dir, seconds it took to build, 0 if cached)."""
    key = recipe.rootfs_key()
    final = cache.entry_dir("ssh-rootfs", key)
    if cache.is_complete(final):
        return final / "root", 0.0
    if os.geteuid() != 0:
        raise SshImageError("building the ssh image needs root (debootstrap, chroot)",
                            hint="run `sudo rig images build ssh` once; later runs reuse the cached image")
    from .debian import _debian_uri

    uri = _debian_uri()
    t0 = time.monotonic()
    debs = cache.cache_root() / "ssh-rootfs" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with cache.building("ssh-rootfs", key) as tmp:
        root = tmp / "root"
        try:
            log(f"debootstrap {recipe.suite} ({recipe.variant} + {len(recipe.include)} packages) into {root}")
            _run(
                [
                    "debootstrap", f"--variant={recipe.variant}", f"--include={','.join(recipe.include)}",
                    f"--cache-dir={debs}", recipe.suite, str(root), uri,
                ],
                "debootstrap",
                log=log,
            )
            _customise_rootfs(root, recipe)
        finally:
            unmount_under(tmp)
        seconds = time.monotonic() - t0
        (tmp / "build.json").write_text(json.dumps({"seconds": round(seconds, 1), "recipe": asdict(recipe)}, indent=1))
    log(f"root tree built in {seconds:.0f} s")
    return final / "root", seconds


def _customise_rootfs(root: Path, recipe: SshImageRecipe) -> None:
    # Host keys are made per image in stage 2; drop the ones the package generated.
    for p in (root / "etc/ssh").glob("ssh_host_*"):
        p.unlink()
    _write(
        root / "etc/ssh/sshd_config.d/rig.conf",
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n",
        0o644,
    )
    _write(root / "etc/hostname", "rig-ssh\n", 0o644)
    _write(root / "etc/fstab", "# root is mounted by the initramfs (root=/dev/vda)\n", 0o644)
    if recipe.initramfs_modules:
        # Only the listed modules, loaded by the initramfs' own init (/conf/modules); no udev in the
        # initramfs (its coldplug costs seconds under TCG): its init mounts devtmpfs, and rig-init
        # mounts /dev again in the root when nothing moved it there.
        _write(root / "etc/initramfs-tools/conf.d/rig.conf", "MODULES=list\n", 0o644)
        _write(root / "etc/initramfs-tools/modules", "\n".join(recipe.initramfs_modules) + "\n", 0o644)
        for part in ("hooks/udev", "scripts/init-top/udev", "scripts/init-bottom/udev"):
            (root / "usr/share/initramfs-tools" / part).unlink(missing_ok=True)
        _run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], "update-initramfs in the image")
    # Keep the tree small: package caches, documentation and translations are not needed in the guest.
    for d in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/apt"):
        for p in (root / d).glob("*"):
            if p.is_file():
                p.unlink()
    for d in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(root / d, ignore_errors=True)


# -- stage 2: the image ---------------------------------------------------------------


def _kernel_files(root: Path) -> tuple[Path, Path, str]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SshImageError(f"{root}/boot has no vmlinuz-*: did linux-image install?")
    vmlinuz = kernels[-1]
    release = vmlinuz.name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.exists():
        raise SshImageError(f"{initrd} missing: update-initramfs did not run in the chroot")
    return vmlinuz, initrd, release


def image_key(recipe: SshImageRecipe, tools: dict[str, Path]) -> str:
    parts: list[str | bytes] = ["image/1", recipe.rootfs_key(), recipe.append, recipe.user, recipe.tools_dir,
                                str(recipe.slack_mib)]
    for name in sorted(tools):
        parts += [name, tools[name].read_bytes()]
    return cache.digest(parts)


def build_ssh_image(
    tools: dict[str, Path],
    *,
    recipe: SshImageRecipe | None = None,
    log: Callable[[str], None] = _log_default,
) -> SshImage:
    """Build (or reuse) the SSH guest image with ``tools`` (name in guest -> host file) in ``recipe.tools_dir``."""
    recipe = recipe or SshImageRecipe.load()
    for name, p in tools.items():
        if not p.is_file():
            raise SshImageError(f"tool {name}: {p} does not exist")
    key = image_key(recipe, tools)
    final = cache.entry_dir("ssh", key)
    if cache.is_complete(final):
        return SshImage.load(final)
    root, rootfs_seconds = build_rootfs(recipe, log=log)
    if rootfs_seconds == 0.0:
        try:
            rootfs_seconds = json.loads((root.parent / "build.json").read_text())["seconds"]
        except (OSError, ValueError, KeyError):
            rootfs_seconds = None
    t0 = time.monotonic()
    with cache.building("ssh", key) as out:
        stage = out / "stage"
        _run(["cp", "-a", "--reflink=auto", str(root), str(stage)], "copy of the root tree")
        host_priv, host_pub = _ed25519_keypair("rig-ssh-host")
        _write(stage / "etc/ssh/ssh_host_ed25519_key", host_priv, 0o600)
        _write(stage / "etc/ssh/ssh_host_ed25519_key.pub", host_pub + "\n", 0o644)
        cli_priv, cli_pub = _ed25519_keypair("kvm-cpuid-rig")
        _write(out / "id_ed25519", cli_priv, 0o600)
        _write(out / "id_ed25519.pub", cli_pub + "\n", 0o644)
        home = stage / ("root" if recipe.user == "root" else f"home/{recipe.user}")
        _write(home / ".ssh/authorized_keys", cli_pub + "\n", 0o600)
        os.chmod(home / ".ssh", 0o700)
        _write(stage / "sbin/rig-init", recipe.init, 0o755)
        tdir = stage / recipe.tools_dir.lstrip("/")
        for name, p in tools.items():
            _write(tdir / name, p.read_bytes(), 0o755)
        vmlinuz, initrd, release = _kernel_files(stage)
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        shutil.copyfile(initrd, out / "initrd.img")
        used = int(_run(["du", "-sxm", str(stage)], "du").split()[0])
        size_mib = int(used * 1.15) + recipe.slack_mib
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", "rigroot", "-d", str(stage), str(out / "disk.img"), f"{size_mib}M"],
            "mkfs.ext4 -d",
        )
        shutil.rmtree(stage)
        image = SshImage(
            dir=out, disk=out / "disk.img", kernel=out / "vmlinuz", initrd=out / "initrd.img", key=out / "id_ed25519",
            host_key=host_pub, user=recipe.user, append=recipe.append, tools_dir=recipe.tools_dir,
            kernel_release=release, rootfs_seconds=rootfs_seconds, image_seconds=round(time.monotonic() - t0, 1),
        )
        (out / "image.json").write_text(json.dumps(image.to_json(), indent=1) + "\n")
    log(f"image {key} built in {image.image_seconds:.0f} s ({size_mib} MiB disk, kernel {release})")
    return SshImage.load(final)


def build_default_ssh_image(*, log: Callable[[str], None] = _log_default) -> SshImage:
    """The rig's ssh image with the current probe (user form) and insncheck builds in it."""
    from .insncheck import build_insncheck
    from .probe import build_probe

    return build_ssh_image({"probe-user": build_probe().user, "insncheck": build_insncheck()}, log=log)
