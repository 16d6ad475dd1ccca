"""How a case's machine picks the probe's boot: form suffixes, the qboot firmware, and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.images.probe import ProbeArtifacts
from rig.qemu.cmdline import QemuCommand
from rig.run.guests import GuestError, probe_boot, split_machine

PROBE = ProbeArtifacts(pvh=Path("/c/probe.elf"), bootsector=Path("/c/probe.img"),
                       user=Path("/c/probe-user"), digest="d")


@pytest.mark.parametrize(("machine", "split"), [
    ("microvm", ("microvm", "pvh")), ("q35", ("q35", "bootsector")), ("pc", ("pc", "bootsector")),
    ("q35+pvh", ("q35", "pvh")), ("q35+qboot", ("q35", "qboot")), ("pc+bootsector", ("pc", "bootsector")),
])
def test_split_machine(machine, split):
    assert split_machine(machine) == split


def test_qboot_boots_the_pvh_form_with_qboot_rom():
    b = probe_boot("q35+qboot", PROBE)
    assert (b.machine, b.form, b.kernel, b.drive, b.bios) == ("q35", "pvh", PROBE.pvh, None, "qboot.rom")
    assert probe_boot("q35+pvh", PROBE).bios is None and probe_boot("q35", PROBE).drive == PROBE.bootsector


@pytest.mark.parametrize("machine", ["microvm+qboot", "microvm+bootsector", "q35+uefi"])
def test_impossible_forms_are_errors(machine):
    with pytest.raises(GuestError, match=machine.replace("+", r"\+")):
        probe_boot(machine, PROBE)


def test_bios_on_the_command_line():
    argv = QemuCommand(machine="q35", kernel="/c/probe.elf", bios="qboot.rom").argv()
    assert argv[argv.index("-bios") + 1] == "qboot.rom"
    assert "-bios" not in QemuCommand(machine="q35", kernel="/c/probe.elf").argv()
