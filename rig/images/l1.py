"""The emulated L1 host image: a Debian kernel + an initramfs that runs real KVM.

``build_l1_image(kernel)`` returns an :class:`L1Image` (``vmlinuz`` and an
``initrd`` path in the rig cache).  The recipe is ``images/l1.toml``: the initrd
is a kernel-independent *base* archive (busybox, the static ``kvmcap`` helper,
the machine's QEMU with its shared libraries and firmware, the L2 probe,
``/init`` from ``guests/l1/init``) followed by a *modules* archive (the
kernel's kvm, kvm-amd, irqbypass ``.ko``, decompressed).  Each part is
content-addressed: the base digest covers every byte that goes in, the image
digest the base digest and the module bytes; a second build finds the entry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RigError
from . import cache
from . import initramfs as ir
from .kernel import DebianKernel
from .qemu import fetch_qemu
from .recipes import read_recipe

BASE_KIND = "l1-base"
KIND = "l1"
KVMCAP_KIND = "kvmcap"

#: where things sit inside L1 (guests/l1/init relies on these)
L1_PROBE = "/rig/probe.elf"
L1_QEMU = "/usr/bin/qemu-system-x86_64"
L1_FIRMWARE = "/usr/share/qemu"


class L1ImageError(RigError):
    pass


@dataclass(frozen=True)
class L1Recipe:
    qemu: str
    firmware: tuple[str, ...]
    firmware_dir: Path
    busybox: Path
    busybox_package: str
    init: Path
    kvmcap: Path
    kvmcap_cflags: tuple[str, ...]
    kvmrun: Path
    modules: tuple[str, ...]
    boot: dict[str, Any]


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def load_recipe(path: Path | None = None) -> L1Recipe:
    try:
        text = path.read_text() if path else read_recipe("l1.toml")
        d = tomllib.loads(text)
        root = project_root()
        return L1Recipe(
            qemu=str(d["qemu"]),
            firmware=tuple(str(f) for f in d["firmware"]),
            firmware_dir=Path(d["firmware_dir"]),
            busybox=Path(d["busybox"]),
            busybox_package=str(d["busybox_package"]),
            init=root / d["init"],
            kvmcap=root / d["kvmcap"],
            kvmcap_cflags=tuple(str(f) for f in d["kvmcap_cflags"]),
            kvmrun=root / d["kvmrun"],
            modules=tuple(str(m) for m in d["modules"]),
            boot=dict(d["boot"]),
        )
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
        raise L1ImageError(f"{path or 'images/l1.toml'}: bad L1 recipe: {e}") from e


@dataclass(frozen=True)
class L1Image:
    """A bootable L1 host: ``vmlinuz`` + ``initrd`` (base + modules archives).

    ``with_qemu`` is False for the profile-only variant (no QEMU, no L2 guests;
    a 1 MB initrd instead of ~55 MB, which boots seconds faster under TCG).
    """

    release: str
    series: str
    vmlinuz: Path
    initrd: Path
    modules: tuple[str, ...]  # module names in load order
    qemu_version: str | None
    digest: str
    with_qemu: bool = True


# ---------------------------------------------------------------- kvmcap


def build_kvmcap(recipe: L1Recipe | None = None) -> Path:
    """Compile ``guests/l1/kvmcap.c`` statically into the cache; return the binary."""
    recipe = recipe or load_recipe()
    return build_helper(recipe.kvmcap, "kvmcap", recipe.kvmcap_cflags)


def build_kvmrun(recipe: L1Recipe | None = None) -> Path:
    """Compile ``guests/l1/kvmrun.c`` (the QEMU-less L2 runner) statically into the cache; return the binary."""
    recipe = recipe or load_recipe()
    return build_helper(recipe.kvmrun, "kvmrun", recipe.kvmcap_cflags)


def build_helper(source: Path, name: str, cflags: tuple[str, ...]) -> Path:
    """Compile one static L1 helper from ``source`` into the cache (content-addressed); return the binary."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise L1ImageError(f"cannot build {name}: gcc not found", hint="apt-get install gcc libc6-dev")
    try:
        src = source.read_bytes()
    except OSError as e:
        raise L1ImageError(f"{source}: cannot read ({e.strerror})", hint="run from a source checkout") from e
    ver = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = cache.digest([name, src, *ver, *cflags])
    entry = cache.entry_dir(KVMCAP_KIND, key)
    if not cache.is_complete(entry):
        with cache.building(KVMCAP_KIND, key) as tmp:
            out = tmp / name
            proc = subprocess.run([gcc, *cflags, "-o", str(out), str(source)], capture_output=True, text=True)
            if proc.returncode != 0:
                tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                raise L1ImageError(f"{name} build failed: {tail}", hint="needs gcc and libc6-dev (static libc)")
    return entry / name


# ------------------------------------------------------------------ base


def busybox_entries(busybox: Path, package: str) -> list[ir.Entry]:
    """busybox at /bin/busybox plus a symlink per applet at the path ``--list-full`` gives."""
    if not busybox.is_file():
        raise L1ImageError(f"{busybox} not found", hint=f"apt-get install {package}")
    if ir.shared_libraries(busybox):
        raise L1ImageError(f"{busybox} is not static", hint=f"apt-get install {package}")
    proc = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise L1ImageError(f"{busybox} --list-full failed", hint=f"reinstall {package}")
    out = [ir.file("bin/busybox", busybox, 0o755)]
    for applet in proc.stdout.split():
        if applet in ("bin/busybox", "linuxrc"):
            continue
        out.append(ir.symlink(applet, "/bin/busybox"))
    return out


def qemu_entries(recipe: L1Recipe) -> tuple[list[ir.Entry], str]:
    """The L2 QEMU: binary, its shared libraries (ldd), firmware; and its version."""
    qemu = fetch_qemu(recipe.qemu)
    elf = qemu.elf or qemu.binary
    entries = ir.elf_with_libraries(elf, L1_QEMU)
    fw_dir = qemu.firmware_dir or recipe.firmware_dir
    found = 0
    for name in recipe.firmware:
        p = fw_dir / name
        if p.exists():
            entries.append(ir.file(f"{L1_FIRMWARE}/{name}", p.resolve(), 0o644))
            found += 1
    if not found:
        raise L1ImageError(f"no QEMU firmware of {', '.join(recipe.firmware[:3])}... in {fw_dir}",
                           hint="apt-get install qemu-system-data seabios")
    return entries, qemu.version


def base_entries(recipe: L1Recipe, probe: Path | None, with_qemu: bool = True) -> tuple[list[ir.Entry], str | None]:
    """Entries of the base archive and the QEMU version they carry (None without QEMU)."""
    entries = busybox_entries(recipe.busybox, recipe.busybox_package)
    qemu_version = None
    if with_qemu:
        q, qemu_version = qemu_entries(recipe)
        entries += q
        if probe is None:
            from .probe import build_probe

            probe = build_probe().pvh
        entries.append(ir.file(L1_PROBE.lstrip("/"), probe, 0o644))
        entries.append(ir.file("bin/kvmrun", build_kvmrun(recipe), 0o755))
    entries.append(ir.file("bin/kvmcap", build_kvmcap(recipe), 0o755))
    try:
        entries.append(ir.file("init", recipe.init.read_bytes(), 0o755))
    except OSError as e:
        raise L1ImageError(f"{recipe.init}: cannot read ({e.strerror})", hint="run from a source checkout") from e
    for d in ("proc", "sys", "dev", "tmp", "run", "var/tmp"):
        entries.append(ir.directory(d))
    entries.append(ir.chardev("dev/console", 5, 1))
    return entries, qemu_version


def _content_digest(kind: str, entries: list[ir.Entry], extra: list[str]) -> str:
    parts: list[str | bytes] = [kind, *extra]
    for e in ir.complete(entries):
        parts += [e.path, e.kind, str(e.mode), e.content(), f"{e.major}:{e.minor}"]
    return cache.digest(parts)


def build_base(recipe: L1Recipe | None = None, probe: Path | None = None,
               with_qemu: bool = True) -> tuple[Path, str, str | None]:
    """The kernel-independent archive: (path of base.cpio, digest, QEMU version).

    Uncompressed on purpose: unpacking a 19 MB gzip archive takes L1's
    emulated CPU about 3 s; copying the plain 55 MB archive a fraction of that.
    """
    recipe = recipe or load_recipe()
    entries, qemu_version = base_entries(recipe, probe, with_qemu)
    key = _content_digest(BASE_KIND, entries, [qemu_version or "no-qemu", "newc"])
    entry = cache.entry_dir(BASE_KIND, key)
    if not cache.is_complete(entry):
        with cache.building(BASE_KIND, key) as tmp:
            (tmp / "base.cpio").write_bytes(ir.newc_bytes(entries))
            (tmp / "base.json").write_text(json.dumps({"qemu": qemu_version, "entries": len(entries)}) + "\n")
    return entry / "base.cpio", key, qemu_version


# --------------------------------------------------------------- modules


def module_entries(kernel: DebianKernel, names: tuple[str, ...]) -> tuple[list[ir.Entry], list[str]]:
    """The modules of ``names`` with their dependencies, and the ``/rig/modules`` load list."""
    order: list[Path] = []
    for n in names:
        for p in kernel.module_load_order(n):
            if p not in order:
                order.append(p)
    entries, lines, loaded = [], [], []
    for p in order:
        mod = p.name.removesuffix(".ko").replace("-", "_")
        entries.append(ir.file(f"rig/ko/{p.name}", p, 0o644))
        lines.append(f"{mod} {p.name}\n")
        loaded.append(mod)
    entries.append(ir.file("rig/modules", "".join(lines)))
    entries.append(ir.file("rig/kernel-release", kernel.release + "\n"))
    return entries, loaded


def build_l1_image(kernel: DebianKernel, recipe: L1Recipe | None = None, probe: Path | None = None,
                   *, with_qemu: bool = True) -> L1Image:
    """Build (or find) the L1 image for ``kernel`` (``with_qemu=False``: profile only, no L2)."""
    recipe = recipe or load_recipe()
    base, base_key, qemu_version = build_base(recipe, probe, with_qemu)
    mod_entries, loaded = module_entries(kernel, recipe.modules)
    key = _content_digest(KIND, mod_entries, [base_key, kernel.release, kernel.package_version])
    entry = cache.entry_dir(KIND, key)
    if not cache.is_complete(entry):
        with cache.building(KIND, key) as tmp:
            mods = ir.newc_bytes(mod_entries)
            with open(tmp / "initrd.img", "wb") as f:
                with open(base, "rb") as b:
                    shutil.copyfileobj(b, f)
                f.write(mods)
            meta = {"release": kernel.release, "vmlinuz": str(kernel.vmlinuz), "modules": loaded,
                    "base": base_key, "qemu": qemu_version}
            (tmp / "l1.json").write_text(json.dumps(meta, indent=2) + "\n")
    if not kernel.vmlinuz.is_file():
        raise L1ImageError(f"{kernel.vmlinuz}: kernel image missing from the cache", hint="delete the kernel entry and fetch again")
    return L1Image(
        release=kernel.release, series=kernel.series, vmlinuz=kernel.vmlinuz, initrd=entry / "initrd.img",
        modules=tuple(loaded), qemu_version=qemu_version, digest=key, with_qemu=with_qemu,
    )


def l1_image_for(version: str, *, with_qemu: bool = True) -> L1Image:
    """Fetch the Debian kernel matching ``version`` ("6.1", "6.12", "7.x", a release) and build its L1 image."""
    from .kernel import fetch_kernel

    return build_l1_image(fetch_kernel(version), with_qemu=with_qemu)


__all__ = ["L1Image", "L1Recipe", "L1ImageError", "load_recipe", "build_l1_image", "l1_image_for", "build_kvmcap",
           "build_base", "L1_PROBE", "L1_QEMU", "L1_FIRMWARE"]
