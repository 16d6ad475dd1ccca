"""``rig images build probe|linux [--kernel VER]``, ``rig images list``, ``rig images kernels``.

Builds go into the content-addressed cache (:mod:`rig.images.cache`,
``$RIG_CACHE_DIR`` or ``~/.cache/kvm-cpuid-rig``). A re-run with the same
inputs finds the entry and only prints where it is. Other modules add their
own targets to ``rig images build`` through :mod:`rig.subcommands` (e.g. :mod:`rig.images.ssh_cli` adds
``ssh``), in any order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..subcommands import level
from . import cache


def register(sub: argparse._SubParsersAction) -> None:
    isub = level(sub, "images", "build and list guest images", "images_command")
    bsub = level(isub, "build", "build an image into the cache (a re-run is a no-op)", "target")

    p = bsub.add_parser(
        "probe",
        help="the bare-metal CPUID probe: PVH ELF, boot-sector image, static user-mode program",
        description="Build guests/probe with the system gcc/binutils into <cache>/probe/<digest>/ "
        "(the digest covers the sources and the toolchain's versions; same inputs, same bytes).",
    )
    p.add_argument("--json", action="store_true", help="print the artefacts as JSON")
    p.set_defaults(func=_build_probe)

    p = bsub.add_parser(
        "linux",
        help="the linux guest: Debian cloud kernel + busybox-static + user-mode probe in an initramfs",
        description="Fetch a Debian cloud kernel and busybox-static with apt-get download (no root), build "
        "the probe, and write the initramfs into <cache>/linux/<digest>/.",
    )
    p.add_argument("--kernel", default=None, metavar="VER",
                   help="kernel: a series (6.1, 6.12, 7.3), a full release, or newest (default; see `rig images kernels`)")
    p.add_argument("--json", action="store_true", help="print the image as JSON")
    p.set_defaults(func=_build_linux)

    p = isub.add_parser("list", help="what is in the cache", description="List the complete entries of the rig's cache.")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=_list)

    p = isub.add_parser(
        "kernels",
        help="Debian cloud kernels the configured suites offer (newest first), and which are cached",
        description="Resolve the Debian cloud kernels available through the rig's private apt lists.",
    )
    p.set_defaults(func=_kernels)


def _build_probe(args: argparse.Namespace) -> int:
    from .probe import build_probe

    a = build_probe()
    if args.json:
        print(json.dumps({"digest": a.digest, "dir": str(a.directory), "pvh": str(a.pvh),
                          "bootsector": str(a.bootsector), "user": str(a.user)}, indent=1))
    else:
        print(f"probe {a.digest}: {a.directory}")
        print(f"  pvh        {a.pvh.name} (-kernel on microvm, q35, pc)")
        print(f"  bootsector {a.bootsector.name} (-drive on q35, pc: SeaBIOS, real mode)")
        print(f"  user       {a.user.name} (static Linux program)")
    return 0


def _build_linux(args: argparse.Namespace) -> int:
    from .linux import build_linux_image

    img = build_linux_image(args.kernel)
    if args.json:
        print(json.dumps({"digest": img.digest, "dir": str(img.directory), "release": img.release,
                          "vmlinuz": str(img.vmlinuz), "vmlinux": str(img.vmlinux), "initrd": str(img.initrd),
                          "kernel_packages": list(img.kernel_packages), "busybox": img.busybox_version}, indent=1))
    else:
        print(f"linux {img.release} ({img.digest}): {img.directory}")
        print(f"  kernel   {', '.join(img.kernel_packages)}")
        print(f"  busybox  {img.busybox_version}; probe {img.probe_digest}")
    return 0


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _describe(kind: str, entry: Path) -> str:
    for name in ("linux.json", "kernel.json", "busybox.json", *sorted(p.name for p in entry.glob("*.json"))):
        p = entry / name
        if not p.is_file():
            continue
        try:
            meta: Any = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            for key in ("release", "version", "qemu", "name"):
                if meta.get(key):
                    return f"{key} {meta[key]}"
    files = sorted(p.name for p in entry.iterdir() if not p.name.startswith("."))
    return ", ".join(files[:4]) + (" ..." if len(files) > 4 else "")


def cache_entries() -> list[dict[str, Any]]:
    """Every complete ``<kind>/<digest>`` entry of the cache."""
    root = cache.cache_root()
    out = []
    for kind_dir in sorted(root.iterdir()) if root.is_dir() else []:
        if not kind_dir.is_dir() or kind_dir.name in ("apt",):
            continue
        for entry in sorted(kind_dir.iterdir()):
            if entry.is_dir() and cache.is_complete(entry):
                out.append({"kind": kind_dir.name, "digest": entry.name, "path": str(entry),
                            "what": _describe(kind_dir.name, entry), "bytes": _size(entry)})
    return out


def _list(args: argparse.Namespace) -> int:
    entries = cache_entries()
    if args.json:
        print(json.dumps({"cache": str(cache.cache_root()), "entries": entries}, indent=1))
        return 0
    print(f"cache {cache.cache_root()}")
    if not entries:
        print("  (empty: try `rig images build probe`)")
    for e in entries:
        print(f"  {e['kind']:<14} {e['digest']}  {e['bytes'] / 1e6:8.1f} MB  {e['what']}")
    return 0


def _kernels(args: argparse.Namespace) -> int:
    from .kernel import available_kernels, cached_kernels

    cached = {k.release for k in cached_kernels()}
    for release in available_kernels():
        print(f"  {release}{'  (cached)' if release in cached else ''}")
    return 0
