"""The shared command-tree levels: `rig images build` carries the targets of two modules, in either order."""

from __future__ import annotations

import argparse

import pytest

from rig.images import cli as images_cli
from rig.images import ssh_cli
from rig.subcommands import level, subparsers_of


def targets(order) -> list[str]:
    top = argparse.ArgumentParser(prog="rig")
    sub = top.add_subparsers(dest="command")
    for mod in order:
        mod.register(sub)
    build = subparsers_of(sub.choices["images"])
    return sorted(subparsers_of(build.choices["build"]).choices)


@pytest.mark.parametrize("order", [(images_cli, ssh_cli), (ssh_cli, images_cli)], ids=["images-first", "ssh-first"])
def test_both_modules_share_one_build_level(order):
    assert targets(order) == ["linux", "probe", "ssh"]


def test_level_is_created_once_and_prints_help_without_a_target(capsys):
    top = argparse.ArgumentParser(prog="rig")
    sub = top.add_subparsers(dest="command")
    a = level(sub, "images", "h", "images_command")
    assert level(sub, "images", "h", "images_command") is a
    args = top.parse_args(["images"])
    assert args.func(args) == 2
    assert "usage: rig images" in capsys.readouterr().out
