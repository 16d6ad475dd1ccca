"""``rig`` command line: one sub-command module per domain.

Each module listed in :data:`COMMAND_MODULES` exposes ``register(subparsers)``
which adds its sub-commands and sets ``func`` (taking the parsed namespace and
returning an exit status).  Errors derived from :class:`rig.errors.RigError`
print one line and exit non-zero; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import RigError

COMMAND_MODULES: tuple[str, ...] = (
    "rig.host.cli",
    "rig.diffcmd",
    "rig.policy.cli",
    "rig.run.cli",
    "rig.featurescmd",
    "rig.qemu.cli",
    "rig.images.cli",
    "rig.images.ssh_cli",  # after rig.images.cli: attaches `rig images build ssh` to its parser
    "rig.guest.ssh_cli",
    "rig.fleet.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig",
        description="Test rig for the CPUID that QEMU/KVM guests see: observe every layer, model it, explain differences.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('rig').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RigError as e:
        print(f"rig: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
