"""Shared levels of the ``rig`` command tree: modules that add targets to the same level
(``rig images build probe|linux`` from :mod:`rig.images.cli`, ``ssh`` from :mod:`rig.images.ssh_cli`)
find or create it here, whichever registers first."""

from __future__ import annotations

import argparse


def subparsers_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    """The sub-command action of ``parser``, if it has one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def level(sub: argparse._SubParsersAction, name: str, help: str, dest: str) -> argparse._SubParsersAction:
    """The sub-commands of level ``name`` under ``sub``, created on first use (run without a target, the
    level prints its help and exits 2)."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help)
        parser.set_defaults(func=lambda args, p=parser: (p.print_help(), 2)[1])
    action = subparsers_of(parser)
    if action is None:
        action = parser.add_subparsers(dest=dest, metavar="TARGET")
    return action


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (``--jobs``, ``--shards``)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n
