"""``rig images build ssh``: the SSH guest image (rig.images.ssh).

Attaches to the ``rig images build`` parser of :mod:`rig.images.cli` when that
module registered it first (it is listed before this one in
``rig.cli.COMMAND_MODULES``), and creates the ``images``/``build`` levels
itself otherwise, so the command exists either way.
"""

from __future__ import annotations

import argparse
import json

from .ssh import build_default_ssh_image


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _child(sub: argparse._SubParsersAction, name: str, help: str, dest: str) -> argparse.ArgumentParser:
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help)
        parser.set_defaults(func=lambda args, p=parser: (p.print_help(), 2)[1])
    if _subparsers(parser) is None:
        parser.add_subparsers(dest=dest, metavar="TARGET")
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    images = _child(sub, "images", "build and list guest images", "images_command")
    build = _child(_subparsers(images), "build", "build an image into the cache (a re-run is a no-op)", "target")
    p = _subparsers(build).add_parser(
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
