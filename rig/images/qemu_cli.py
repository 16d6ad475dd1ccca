"""``rig images build qemu VERSION``: a QEMU build in the cache (rig.images.qemu), ahead of first use.

Attached to the ``rig images build`` level (:mod:`rig.subcommands`) by :mod:`rig.qemu.cli`'s
``register``; a ``--qemu VERSION`` request builds the same entry on demand.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..subcommands import level


def register(sub: argparse._SubParsersAction) -> None:
    isub = level(sub, "images", "build and list guest images", "images_command")
    build = level(isub, "build", "build an image into the cache (a re-run is a no-op)", "target")
    p = build.add_parser(
        "qemu",
        help="a QEMU build from Debian packages (10.0: bookworm-backports; 11.1: trixie-backports in a root of its own)",
        description="Unpack a QEMU build and its firmware into <cache>/qemu/<digest>/. Builds whose binary needs "
        "a newer C library than the machine's (11.1) get a root of their own suite: the packages and their whole "
        "dependency closure, run through that root's dynamic loader. Recipes: images/qemu.toml.",
    )
    p.add_argument("version", help="a QEMU series with a recipe, e.g. 10.0 or 11.1 (system: the machine's own)")
    p.add_argument("--json", action="store_true", help="print the build as JSON")
    p.set_defaults(func=_build_qemu)


def _build_qemu(args: argparse.Namespace) -> int:
    from .qemu import fetch_qemu

    q = fetch_qemu(args.version, log=lambda msg: print(f"rig: {msg}", file=sys.stderr))
    if args.json:
        print(json.dumps({"version": q.version, "binary": str(q.binary), "firmware_dir": str(q.firmware_dir or ""),
                          "elf": str(q.elf or ""), "prefix": str(q.prefix or ""), "packages": list(q.packages)},
                         indent=1))
    else:
        print(f"qemu {q.version}: {q.binary}")
        if q.firmware_dir:
            print(f"  firmware {q.firmware_dir} ({len(q.packages)} packages)")
    return 0
