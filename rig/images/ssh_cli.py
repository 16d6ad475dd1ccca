"""``rig images build ssh``: the SSH guest image (rig.images.ssh).

Attaches to the ``rig images build`` level (:mod:`rig.subcommands`) that :mod:`rig.images.cli`
also uses, whichever of the two registers first (both are listed in
``rig.cli.COMMAND_MODULES``), so the command exists either way.
"""

from __future__ import annotations

import argparse
import json

from ..subcommands import level
from .ssh import build_default_ssh_image


def register(sub: argparse._SubParsersAction) -> None:
    isub = level(sub, "images", "build and list guest images", "images_command")
    build = level(isub, "build", "build an image into the cache (a re-run is a no-op)", "target")
    p = build.add_parser(
        "ssh",
        help="Debian bookworm image with sshd, the user-mode probe and insncheck (debootstrap; needs root)",
        description="Build the SSH guest image: debootstrap --variant=minbase of bookworm with sshd and the "
        "cloud kernel, the rig's user-mode probe and insncheck, a client key pair and a host key made now "
        "(the rig logs in with the one and verifies the other). Content-addressed in the cache: a re-run "
        "with the same recipe and tools is a lookup.",
    )
    p.add_argument("--json", action="store_true", help="print the image description as JSON")
    p.set_defaults(func=_build_ssh)


def _build_ssh(args: argparse.Namespace) -> int:
    image = build_default_ssh_image()
    if args.json:
        print(json.dumps({**image.to_json(), "dir": str(image.dir)}, indent=1))
    else:
        print(f"ssh image: {image.dir}")
        print(f"  disk {image.disk.name}, kernel {image.kernel_release}, login {image.user} with {image.key}")
        print(f"  host key {image.host_key}")
    return 0
