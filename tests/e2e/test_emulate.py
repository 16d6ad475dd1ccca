"""Emulated host end to end: L1 (a Debian kernel under TCG -cpu EPYC-Rome) with real KVM,
the rig's probe as L2 guests under that KVM, and the `rig host emulate` command.

The L2 checks compare three independent things: what the guest's CPUID
instruction returned (the probe), what QEMU inside L1 configured (QMP
feature-words / filtered-features, read inside L1), and what the rig predicts
(rig.qemu.model over L1's measured KVM_GET_SUPPORTED_CPUID, and over the
policy model's predicted one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from rig.cpuid.table import CpuidTable
from rig.emulate import EmulatedHost, EmulateError, L1BootTimeout, probe_args
from rig.emulate.verify import l2_check
from rig.host.profile import HostProfile

pytestmark = pytest.mark.e2e

L1_CPU, L1_KERNEL = "EPYC-Rome", "6.12"
#: -cpu lines of the L2 cases, with bits the guest must (1) or must not (0) see:
#: (leaf, subleaf, reg, bit) -> value, from the QEMU model definitions (EPYC-Rome has
#: avx2 7.0.EBX[5]; qemu64 has no x2apic 1.ECX[21] unless asked; "-avx2" removes it)
L2_CASES = {
    "EPYC-Rome": {(7, 0, "ebx", 5): 1, (1, 0, "ecx", 21): 1},
    "EPYC-Rome,-avx2": {(7, 0, "ebx", 5): 0, (7, 0, "ebx", 3): 1},
    "qemu64,+x2apic": {(1, 0, "ecx", 21): 1, (7, 0, "ebx", 5): 0},
}
#: L2 machine and the irqchip QEMU gives it under KVM (microvm defaults to a split
#: irqchip: QEMU then adds KVM_FEATURE_MSI_EXT_DEST_ID, seen in feature-words)
L2_MACHINE, L2_IRQCHIP = "microvm", "split"


@pytest.fixture(scope="module")
def host():
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed (run scripts/setup.sh)")
    with EmulatedHost(L1_CPU, L1_KERNEL) as h:
        yield h


@pytest.fixture(scope="module")
def cases(host):
    return {cpu: host.run_probe(cpu, L2_MACHINE, timeout=60) for cpu in L2_CASES}


@pytest.fixture(scope="module")
def qemu_facts():
    from rig.qemu.binaries import find_qemu, gather_facts

    return gather_facts(find_qemu())


def test_l1_profile_is_a_real_kvm_host(host):
    p = host.profile
    assert p.source == "emulated" and p.kernel.release.startswith("6.12.")
    assert p.vendor == "AuthenticAMD" and "svm" in p.kernel.flags
    assert p.kvm.vendor_module == "kvm_amd" and p.kvm.api_version == 12
    # KVM_GET_SUPPORTED_CPUID answered; leaf 0 vendor passes through from the (emulated) host
    assert p.kvm.supported is not None and p.kvm.supported.vendor == "AuthenticAMD"
    # the profile round-trips through the `rig host capture` JSON format
    again = HostProfile.from_json(json.loads(p.dumps()))
    assert again.kvm.supported == p.kvm.supported and again.raw == p.raw


@pytest.mark.parametrize("cpu", list(L2_CASES))
def test_l2_guest_equals_qemu_configured_and_kvm_filter(cases, host, cpu):
    r = cases[cpu]
    assert r.probe_ok, f"L2 {cpu}: exit {r.exit_status}: {r.stderr[-400:]}"
    rep = r.report()
    assert set(rep.tables) == {"prot32", "long64"}
    for (leaf, sub, reg, bit), want in L2_CASES[cpu].items():
        for mode, table in rep.tables.items():
            assert table.bit(leaf, sub, reg, bit) == want, f"{cpu} {mode} {leaf:#x}.{sub}.{reg}[{bit}]"
    check = l2_check(host.profile, r)
    assert check.words >= 20 and check.ok, check.summary()


@pytest.mark.parametrize("cpu", list(L2_CASES))
def test_l2_guest_equals_rig_prediction(cases, host, qemu_facts, cpu):
    """rig.qemu.model over L1's measured KVM table predicts QEMU's configured and filtered words exactly,
    and the guest reads the predicted values (apart from the CR4-dependent bits)."""
    from rig.emulate.verify import RUNTIME_BITS
    from rig.qemu.model import predict_guest

    r = cases[cpu]
    prof = host.profile
    pred = predict_guest(qemu_facts, cpu, "kvm", L2_MACHINE, prof.kvm.supported, host_raw=prof.raw, irqchip=L2_IRQCHIP)
    assert [str(d.location) for d in pred.table.diff(r.feature_words())] == []
    assert [str(d.location) for d in pred.filtered.diff(r.filtered_features())] == []
    observed = r.report().tables["long64"]
    bad = []
    for (leaf, sub), regs in pred.table.items():
        for reg in ("eax", "ebx", "ecx", "edx"):
            want = regs.get(reg)
            if want is None:
                continue
            got = observed.reg(leaf, sub, reg) or 0
            if (got ^ want) & ~RUNTIME_BITS.get((leaf, sub, reg), 0):
                bad.append(f"{leaf:#x}.{sub}.{reg}: predicted {want:08x}, guest {got:08x}")
    assert bad == []


def test_l2_timeout_is_enforced_in_l1(host):
    # -S without QMP: QEMU stays paused forever; L1 kills it at the timeout
    r = host.run_l2(probe_args("qemu64") + ["-S"], timeout=2)
    assert r.timed_out and r.exit_status == 137
    assert 1.5 <= r.l1_seconds < 10


def test_l2_unknown_cpu_model_reports_qemu_error(host):
    r = host.run_probe("NoSuchCpu", timeout=20, qmp=False)
    assert r.exit_status == 1 and not r.probe_ok
    assert "NoSuchCpu" in r.stderr


def test_l2_bad_arguments_rejected(host):
    with pytest.raises(EmulateError, match="line breaks"):
        host.run_l2(["-cpu", "qemu64\n-S"])
    with pytest.raises(EmulateError, match="at least 1 s"):
        host.run_l2(probe_args("qemu64"), timeout=0)


def test_unknown_l1_model_fails_fast():
    with pytest.raises(EmulateError, match=r"QEMU for L1 \(-cpu NoSuchModel\) exited with status 1: .*unable to find CPU model 'NoSuchModel'"):
        with EmulatedHost("NoSuchModel", "6.1", l2=False):
            pass


def test_l1_without_svm_has_no_kvm():
    """Without SVM kvm_amd refuses to load; the profile says so and L2 runs are refused."""
    with EmulatedHost("qemu64,-svm", "6.1", l2=False) as h:
        p = h.profile
        assert p.kvm.supported is None and p.kvm.error
        assert any("kvm_amd" in m for m in p.missing), p.missing
        with pytest.raises(EmulateError):
            h.run_l2(probe_args("qemu64"))


def test_l1_boot_hang_times_out_with_clear_message():
    """Debian 6.12 hangs early at boot under TCG -cpu Opteron_G4 (design.md §4)."""
    with pytest.raises(L1BootTimeout, match=r"Opteron_G4: L1 did not start its init within 15 s \(timed out\)"):
        with EmulatedHost("Opteron_G4", "6.12", l2=False, boot_timeout=15):
            pass


def test_cli_emulate_writes_profile_and_runs_l2(tmp_path):
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rig", "host", "emulate", "--cpu", "EPYC-Rome", "--kernel", "6.1",
         "--kvm-param", "nested=0", "-o", str(out), "--l2-cpu", "EPYC-Rome,-avx2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "L2 -cpu EPYC-Rome,-avx2: probe ok" in proc.stdout
    p = HostProfile.load(out)
    assert p.kernel.release.startswith("6.1.0-") and p.kvm.params("kvm_amd")["nested"] == "0"
    # nested=0: KVM does not advertise SVM to its guests (svm_set_cpu_caps sets X86_FEATURE_SVM only if nested)
    assert isinstance(p.kvm.supported, CpuidTable) and p.kvm.supported.bit(0x80000001, 0, "ecx", 2) == 0
    show = subprocess.run([sys.executable, "-m", "rig", "host", "show", str(out)], capture_output=True, text=True)
    assert show.returncode == 0 and "emulated" in show.stdout


def test_cli_emulate_bad_param_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "rig", "host", "emulate", "--cpu", "EPYC", "--kvm-param", "bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rig: error: KVM parameter 'bogus' is not MODULE.NAME=VALUE")


def test_cli_emulate_output_into_character_device_keeps_it(tmp_path):
    """`-o DEV`: the profile is written into the device, which stays a character device (issue 11: a rename
    over /dev/null made it a regular file). The device has /dev/null's numbers (1, 3), made in tmp_path."""
    import os
    import stat

    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod of a character device needs root (CAP_MKNOD)")
    proc = subprocess.run(
        [sys.executable, "-m", "rig", "host", "emulate", "--cpu", "EPYC-Rome", "--kernel", "6.1", "-o", str(dev)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"profile written to {dev}" in proc.stdout
    st = os.lstat(dev)
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_kvmrun_guest_reads_kvm_supported_cpuid_as_it_is(host):
    """L2 without QEMU (guests/l1/kvmrun.c): the probe's CPUID equals L1's KVM_GET_SUPPORTED_CPUID on every
    feature register, in every CPU mode (runtime bits OSXSAVE/OSPKE excepted), and the CPUID kvmrun set
    (its stderr) is that table."""
    from rig.emulate.l2 import feature_registers

    r = host.run_probe("host", "kvmrun", timeout=60)
    assert r.probe_ok, r.stderr[-500:]
    sup = host.profile.kvm.supported
    check = l2_check(host.profile, r, feature_registers(sup))
    assert check.modes == ["long64", "prot32"] and check.words > 20
    assert check.guest_vs_configured == [] and check.configured_not_supported == [], check.summary()
    set_lines = [ln.split() for ln in r.stderr.splitlines() if ln.startswith("cpuid ")]
    assert len(set_lines) == len(sup.entries)
    for _, leaf, sub, *regs in set_lines:
        got = sup.get(int(leaf, 16), int(sub, 16))
        assert got is not None and [got.eax, got.ebx, got.ecx, got.edx] == [int(x, 16) for x in regs], (leaf, sub)


def test_cli_emulate_kvmrun(tmp_path):
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rig", "host", "emulate", "--cpu", "EPYC-Rome", "--kernel", "6.1", "-o", str(out),
         "--l2-cpu", "host", "--machine", "kvmrun"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "L2 -cpu host: probe ok" in proc.stdout and "differ" not in proc.stdout


def test_garbled_case_arguments_are_refused_by_l1(host):
    """L1 checks the announced byte count of an L2 case's arguments and runs nothing when bytes were lost
    (run_l2 then sends the case again); here the count is wrong on purpose."""
    host._send(b"run 9999 10 0 12\n-M\nmicrovm\n\n")  # 11 argument bytes, 12 announced
    ack = host._wait_frame("case/9999/args", time.monotonic() + 60, "no acknowledgement", 60)
    assert list(ack.lines) == ["garbled 11 12"]
    r = host.run_probe("qemu64", L2_MACHINE, timeout=60)  # the channel is still in step
    assert r.probe_ok
