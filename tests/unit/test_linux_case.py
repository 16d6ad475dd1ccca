"""Pure logic of the linux guest in `rig run`: which machines it boots on, which guests a run accepts,
and the kernel view (/proc/cpuinfo flags against CPUID bits).

Bit positions are the architectural ones (Intel SDM vol. 2A, CPUID): 1.ECX[28] AVX, 7.0.EBX[5] AVX2,
7.0.ECX[16] LA57, 0x80000001.EDX[29] LM; vendor strings from leaf 0 (EBX, EDX, ECX).
"""

from __future__ import annotations

import pytest

from rig.cpuid.table import CpuidTable
from rig.errors import RigError
from rig.run.checks import check_guest
from rig.run.guests import GuestError
from rig.run.kernelview import KernelFlagRule, kernel_flag_rules, kernel_view
from rig.run.linux_case import check_linux_machine


def _vendor(t: CpuidTable, vendor: str) -> None:
    b = vendor.encode()
    t.set_reg(0, 0, "eax", 7)
    t.set_reg(0, 0, "ebx", int.from_bytes(b[0:4], "little"))
    t.set_reg(0, 0, "edx", int.from_bytes(b[4:8], "little"))
    t.set_reg(0, 0, "ecx", int.from_bytes(b[8:12], "little"))


def _table(vendor: str = "GenuineIntel", *, avx2: bool = True, la57: bool = False, lm: bool = True) -> CpuidTable:
    t = CpuidTable()
    _vendor(t, vendor)
    t.set_reg(1, 0, "ecx", 1 << 28)                 # avx
    t.set_reg(7, 0, "ebx", (1 << 5) if avx2 else 0)  # avx2
    t.set_reg(7, 0, "ecx", (1 << 16) if la57 else 0)
    t.set_reg(0x80000001, 0, "edx", (1 << 29) if lm else 0)
    t.set_reg(0x80000001, 0, "ecx", 0)
    return t


def test_kernel_view_agreement():
    v = kernel_view(_table(), ["avx", "avx2", "lm", "fpu_exception_not_a_cpuid_flag"], rules=())
    assert v["cpuid_only"] == [] and v["cpuinfo_only"] == []
    assert v["compared"] > 4


def test_kernel_view_reports_both_directions():
    # CPUID has AVX2 but the kernel does not show it; the kernel shows avx2 where CPUID lacks it
    v = kernel_view(_table(), ["avx", "lm"], rules=())
    assert v["cpuid_only"] == ["avx2"] and v["cpuinfo_only"] == []
    v = kernel_view(_table(avx2=False), ["avx", "avx2", "lm"], rules=())
    assert v["cpuid_only"] == [] and v["cpuinfo_only"] == ["avx2"]


def test_kernel_view_ignores_flags_outside_the_table():
    t = _table()
    # leaf 0xD subleaf 1 (xsaveopt, ...) is not in the table: its flags are not compared
    v = kernel_view(t, ["avx", "avx2", "lm", "xsaveopt"], rules=())
    assert "xsaveopt" not in v["cpuinfo_only"]


def test_kernel_rules_explain_known_kernel_behaviour():
    rules = kernel_flag_rules()
    assert {r.flag for r in rules} >= {"3dnowprefetch", "la57"}
    # AMD with LM: the kernel shows 3dnowprefetch without 0x80000001.ECX[8]
    amd = _table("AuthenticAMD")
    v = kernel_view(amd, ["avx", "avx2", "lm", "3dnowprefetch"])
    assert v["cpuinfo_only"] == [] and "3dnowprefetch" in v["explained"]
    # the same flag on Intel is not explained
    v = kernel_view(_table(), ["avx", "avx2", "lm", "3dnowprefetch"])
    assert v["cpuinfo_only"] == ["3dnowprefetch"]
    # la57 in CPUID but a 4-level-paging kernel does not show it
    v = kernel_view(_table(la57=True), ["avx", "avx2", "lm"])
    assert v["cpuid_only"] == [] and "la57" in v["explained"]


def test_kernel_rule_conditions():
    r = KernelFlagRule("avx2", "optional", "cpuid=avx", "test")
    assert kernel_view(_table(), ["avx", "lm"], rules=[r])["cpuid_only"] == []
    r = KernelFlagRule("avx2", "optional", "nosuchflag", "test")
    assert kernel_view(_table(), ["avx", "lm"], rules=[r])["cpuid_only"] == ["avx2"]


@pytest.mark.parametrize("machine", ["microvm", "q35", "pc", "q35,smm=off"])
def test_linux_machines(machine):
    check_linux_machine(machine)
    check_guest("linux", machine)


@pytest.mark.parametrize("machine", ["isapc", "q35+pvh"])
def test_linux_bad_machines(machine):
    with pytest.raises(RigError, match="machine"):
        check_guest("linux", machine)


def test_unknown_guest_is_refused():
    with pytest.raises(GuestError, match="'windows' cannot be run by `rig run`") as e:
        check_guest("windows", "q35")
    assert "linux" in str(e.value) and "ssh" in str(e.value)


@pytest.mark.parametrize("machine", ["q35", "pc", "q35,smm=off"])
def test_ssh_machines(machine):
    check_guest("ssh", machine)


@pytest.mark.parametrize("machine", ["microvm", "isapc", "q35+pvh"])
def test_ssh_bad_machines(machine):
    with pytest.raises(RigError, match="boots from a disk through firmware"):
        check_guest("ssh", machine)


def test_ssh_failures_map_to_outcomes():
    from rig.guest import ssh
    from rig.run.ssh_case import outcome_of

    assert outcome_of(ssh.SshBootTimeout("no login")) == "timeout"
    assert outcome_of(ssh.SshQemuExited("gone")) == "qemu-aborted"
    assert outcome_of(ssh.SshHostKeyError("other key")) == "rig-error"
    assert outcome_of(ssh.SshAuthError("refused")) == "rig-error"
    assert outcome_of(ssh.SshCommandFailed("probe exited 1")) == "probe-failed"
    assert outcome_of(ssh.SshCommandTimeout("probe hung")) == "probe-failed"


def test_guest_arguments():
    from rig.caseaxes import GuestKind, GuestSpec, parse_guest
    from rig.run.linux_case import linux_kernel

    assert parse_guest("linux@6.1") == GuestSpec(GuestKind.LINUX, "6.1")
    assert parse_guest("probe") == GuestSpec(GuestKind.PROBE, None)
    assert linux_kernel("linux@7.3") == "7.3" and linux_kernel("linux") is None
    check_guest("linux@6.12", "microvm")
    with pytest.raises(GuestError, match="only the linux guest takes an argument"):
        check_guest("probe@6.1", "microvm")


@pytest.mark.parametrize(("guests", "ok"), [('["linux@6.1", "linux"]', True), ('["linux@"]', False),
                                           ('["linux 6.1"]', False), ('["windows"]', False)])
def test_matrix_guest_field(tmp_path, guests, ok):
    from rig.matrix.load import MatrixError, load_matrix

    p = tmp_path / "m.toml"
    p.write_text(f'[matrix]\nname = "m"\n[[group]]\nname = "g"\nmodels = ["qemu64"]\nguests = {guests}\n')
    if ok:
        assert load_matrix(p).groups[0].guests == ("linux@6.1", "linux")
    else:
        with pytest.raises(MatrixError, match=r"guests\[0\]"):
            load_matrix(p)


def test_emulated_hosts_take_only_the_probe():
    check_guest("probe", "microvm", "emulated:EPYC-Rome@6.12")
    check_guest("linux", "microvm", "simulate")
    with pytest.raises(GuestError, match="emulated hosts run the probe"):
        check_guest("linux", "microvm", "emulated:EPYC-Rome@6.12")
