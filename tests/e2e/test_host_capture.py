"""`rig host capture` on this machine, checked against independent observers."""

import json
import os
import subprocess
import textwrap

import pytest

from rig.host.capture import capture_profile
from rig.host.profile import HostProfile

pytestmark = pytest.mark.e2e

KVM_DUMP_C = textwrap.dedent(r"""
    /* independent reader of KVM_GET_SUPPORTED_CPUID: prints one entry per line */
    #include <fcntl.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <sys/ioctl.h>
    #include <linux/kvm.h>
    int main(void) {
        int fd = open("/dev/kvm", O_RDWR);
        if (fd < 0) { perror("open"); return 2; }
        int n = 1024;
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
        c->nent = n;
        if (ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) < 0) { perror("ioctl"); return 3; }
        for (unsigned i = 0; i < c->nent; i++) {
            struct kvm_cpuid_entry2 *e = &c->entries[i];
            printf("%u %u %u %u %u %u %u\n", e->function, e->index, e->flags, e->eax, e->ebx, e->ecx, e->edx);
        }
        return 0;
    }
""")


@pytest.fixture(scope="module")
def profile():
    # Pinned to one CPU: leaf 1 EBX[31:24] (initial APIC ID) of some KVMs' supported
    # table (seen on this PVM host) is the APIC ID of the CPU the ioctl ran on, and the
    # independent reader below must run where the capture ran.
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    try:
        yield capture_profile()
    finally:
        os.sched_setaffinity(0, old)


def test_raw_vendor_string_is_the_cpus(profile):
    cpuinfo = open("/proc/cpuinfo").read()
    vendor_line = next(line for line in cpuinfo.splitlines() if line.startswith("vendor_id"))
    assert profile.raw.vendor == vendor_line.split(":", 1)[1].strip()
    assert profile.raw.max_basic >= 1


def test_kernel_caps_are_the_proc_cpuinfo_flags(profile):
    cpuinfo = open("/proc/cpuinfo").read()
    flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split(":", 1)[1].split()
    assert profile.kernel.flags == flags
    assert profile.kernel.release == os.uname().release


def test_kvm_supported_cpuid_is_recorded_exactly(profile, tmp_path):
    if not os.path.exists("/dev/kvm"):
        pytest.skip("/dev/kvm absent on this host")
    if profile.kvm.supported is None:
        pytest.skip(f"/dev/kvm not usable here: {profile.kvm.error}")
    src = tmp_path / "kvmdump.c"
    src.write_text(KVM_DUMP_C)
    exe = tmp_path / "kvmdump"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True)
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run(["taskset", "-c", str(cpu), str(exe)], capture_output=True, text=True, check=True).stdout
    theirs = [[int(x) for x in line.split()] for line in out.splitlines()]
    assert profile.kvm.supported_entries == theirs
    for fn, idx, flags, a, b, c, d in theirs:
        key = (fn, idx if flags & 1 else 0)
        assert profile.kvm.supported.entries[key].as_tuple() == (a, b, c, d)


def test_profile_json_round_trip(profile, tmp_path):
    p = tmp_path / "host.json"
    profile.save(p)
    back = HostProfile.load(p)
    assert back.raw == profile.raw
    assert back.kvm.supported == profile.kvm.supported
    assert back.kernel.flags == profile.kernel.flags
    assert json.loads(p.read_text())["format"] == "rig-host-profile/1"


def test_unreadable_kvm_is_a_partial_capture_not_a_crash(tmp_path):
    prof = capture_profile(kvm_device=str(tmp_path / "no-such-kvm"))
    assert prof.kvm.supported is None
    assert "no-such-kvm: cannot open" in prof.kvm.error
    assert any("KVM supported" in m for m in prof.missing)
    assert prof.raw.vendor  # the rest is still there


def test_cli_capture_and_show(tmp_path):
    out = tmp_path / "h.json"
    r = subprocess.run(["rig", "host", "capture", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "raw CPUID" in r.stdout and out.exists()
    r = subprocess.run(["rig", "host", "show", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "kernel" in r.stdout
