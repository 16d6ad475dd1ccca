"""insncheck and the user-mode probe run natively on this machine: the CPU is the source of truth.

Every instruction the host's CPUID advertises (and the kernel enabled) must run;
a fault here means insncheck's encoding or the data's feature mapping is wrong.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rig.guest.instructions import classify, instruction_data, parse_insncheck
from rig.guest.protocol import parse_transcript
from rig.images.insncheck import build_insncheck
from rig.images.probe import build_probe


@pytest.fixture(scope="module")
def host_run():
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (run scripts/setup.sh)")
    probe = subprocess.run([str(build_probe().user)], capture_output=True, text=True, timeout=60)
    table = parse_transcript(probe.stdout, case="host").tables["user"]
    out = subprocess.run([str(build_insncheck())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return table, out.stdout


def test_every_advertised_instruction_runs_on_the_host(host_run):
    table, out = host_run
    report = classify(parse_insncheck(out), table, accel="host")
    assert len(report.results) == len(instruction_data().tests)
    assert [r.line() for r in report.advertised_but_faults] == []
    # The baseline every x86-64 CPU has (SSE3, CX16 on any 64-bit CPU that runs Debian 12's userland).
    assert report.by_test("sse3").verdict == "ok"
    assert report.by_test("cx16").verdict == "ok"


def test_insncheck_runs_only_the_named_tests(host_run):
    out = subprocess.run([str(build_insncheck()), "sse3", "nosuch"], capture_output=True, text=True, timeout=60)
    run = parse_insncheck(out.stdout)
    assert set(run.outcomes) == {"sse3", "nosuch"}
    assert run.outcomes["nosuch"].outcome == "unknown"


def test_insncheck_build_is_cached():
    assert build_insncheck() == build_insncheck()
