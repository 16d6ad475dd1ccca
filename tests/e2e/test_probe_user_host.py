"""The user-mode probe on this host against the rig's own CPUID enumeration (rig/cpuid/enumeration.py).

Two implementations of the architectural enumeration rules, the probe's C
(guests/probe/enum.c) and the rig's Python, run on the same CPU here. They
must list the same leaves and subleaves with the same values. Both are pinned
to one CPU so per-CPU fields (APIC IDs) agree.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from rig.cpuid.enumeration import enumerate_cpuid
from rig.guest.protocol import parse_transcript
from rig.host.cpuid_exec import CpuidExecutor
from rig.images.probe import build_probe

pytestmark = pytest.mark.e2e


@pytest.fixture
def pinned():
    old = os.sched_getaffinity(0)
    cpu = min(old)
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, old)


def test_user_probe_enumerates_like_the_rig(pinned):
    probe = build_probe()
    proc = subprocess.run([str(probe.user)], capture_output=True, text=True, timeout=30,
                          preexec_fn=lambda: os.sched_setaffinity(0, {pinned}))
    assert proc.returncode == 0, proc.stderr
    rep = parse_transcript(proc.stdout, case="host user probe")
    assert rep.ok and rep.form == "user" and rep.modes == ("user",)
    mine = rep.tables["user"]
    rig = enumerate_cpuid(CpuidExecutor.open())
    assert list(mine) == list(rig), "leaf/subleaf sets differ"
    diffs = [f"{leaf:#x}.{sub}: probe {mine.get(leaf, sub)} rig {rig.get(leaf, sub)}"
             for leaf, sub in rig if mine.get(leaf, sub) != rig.get(leaf, sub)]
    assert diffs == []
    # the host kernel has CR4.OSXSAVE on: the user probe reports XCR0 and sees OSXSAVE
    snap = rep.snapshot("user", "osxsave", "observed")
    if mine.bit(1, 0, "ecx", 26):
        assert snap is not None and snap.bit(1, 0, "ecx", 27) == 1 and snap.xcr0 and snap.xcr0 & 0x3 == 0x3
