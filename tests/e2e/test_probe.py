"""The bare-metal probe under real QEMU (TCG): build, boot forms, exit status, and equality with QMP.

The reference is QEMU itself: the ``feature-words`` of the vCPU read over QMP
from the same QEMU process the probe runs in.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from rig.cpuid.table import REGISTERS, CpuidTable
from rig.guest.probe_run import run_probe
from rig.guest.quirks import detect_host_quirk
from rig.images.probe import build_probe

pytestmark = pytest.mark.e2e

MODELS = ("qemu64", "Skylake-Server", "EPYC-Rome", "max")
SRC = Path(__file__).resolve().parents[2] / "guests" / "probe"


@pytest.fixture(scope="module")
def probe(qemu_binary):
    return build_probe()


def word_diffs(table: CpuidTable, fw: CpuidTable) -> list[str]:
    """Every register QMP reports, compared whole (no bit is exempt)."""
    out = []
    for (leaf, sub), regs in fw.items():
        for reg in REGISTERS:
            v = regs.get(reg)
            if v is not None and table.value(leaf, sub, reg) != v:
                out.append(f"{leaf:#x}.{sub}.{reg}: probe {table.value(leaf, sub, reg):08x} QMP {v:08x}")
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_build_is_reproducible_across_directories(tmp_path, monkeypatch):
    """Same sources, another source path and another output directory: the same bytes."""
    a = build_probe(tmp_path / "a")
    copy = tmp_path / "src-copy" / "probe"
    shutil.copytree(SRC, copy)
    monkeypatch.setenv("RIG_PROBE_SRC", str(copy))
    b = build_probe(tmp_path / "b")
    assert a.digest == b.digest
    for x, y in ((a.pvh, b.pvh), (a.bootsector, b.bootsector), (a.user, b.user)):
        assert sha(x) == sha(y), f"{x.name} differs between two builds"


def test_cached_build_is_a_no_op(probe):
    again = build_probe()
    assert again == probe
    assert (probe.directory / ".complete").exists()
    # only the artefacts are kept in the cache entry
    assert sorted(p.name for p in probe.directory.iterdir()) == [".complete", "probe-user", "probe.elf", "probe.img"]


@pytest.mark.parametrize("cpu", MODELS)
def test_long_mode_table_equals_qmp_feature_words(probe, cpu, tmp_path):
    run = run_probe(probe, cpu=cpu, workdir=tmp_path, machine="microvm", accel="tcg")
    assert run.ok, f"{run.observation.outcome}: {run.observation.message}"
    assert run.observation.exit_code == 33
    fw = run.observation.feature_words
    assert fw is not None and len(fw) >= 10
    rep = run.report
    assert rep.form == "pvh" and rep.modes == ("prot32", "long64")
    assert word_diffs(rep.tables["long64"], fw) == []
    assert word_diffs(rep.tables["prot32"], fw) == []
    # and therefore no host quirk under TCG
    assert detect_host_quirk(rep, fw, filtered_features=run.observation.filtered_features,
                             expansion=run.observation.expansion, cpu=cpu) is None


# Models the nightly matrix found the probe failing on: no CMOV (the 486 and pentium
# have none; QEMU's TCG raises #UD for CMOVcc then) and xsave without any 0xD.1.EAX
# feature (QEMU's TCG then treats CR4.OSXSAVE as reserved and spins on the write).
AWKWARD = ("486", "pentium", "qemu64,cmov=off", "Opteron_G4", "Opteron_G5,hypervisor=off", "Broadwell,xsaveopt=off")


@pytest.mark.parametrize("cpu", AWKWARD)
def test_probe_completes_on_models_without_cmov_or_xsaveopt(probe, cpu, tmp_path):
    run = run_probe(probe, cpu=cpu, workdir=tmp_path, machine="microvm", accel="tcg", timeout=20)
    assert run.ok, f"{run.observation.outcome}: {run.observation.message}"
    fw = run.observation.feature_words
    for mode in run.report.modes:
        assert word_diffs(run.report.tables[mode], fw) == [], mode
    has_lm = fw.bit(0x80000001, 0, "edx", 29)
    assert run.report.modes == (("prot32", "long64") if has_lm else ("prot32",))
    xsave = fw.bit(1, 0, "ecx", 26)
    xsave_sub1 = fw.reg(0xD, 1, "eax") if fw.get(0xD, 1) is not None else 0
    expected = "no-xsave" if not xsave else ("tcg-osxsave-reserved" if not xsave_sub1 else None)
    for mode in run.report.modes:
        if expected is None:
            assert run.report.snapshot(mode, "osxsave", "after").bit(1, 0, "ecx", 27) == 1
        else:
            assert run.report.snapshot(mode, "osxsave", "skip").reason == expected, mode


def test_probe_ring0_code_has_no_cmov(probe):
    """The build's own check (Makefile check-insns), verified on the cached artefact: no CMOVcc in
    the 32-bit PVH code (the 64-bit core is embedded as data and checked from its objects)."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    out = subprocess.run(["objdump", "-d", "-j", ".text", str(probe.pvh)], capture_output=True, text=True,
                         check=True).stdout
    assert "cmov" not in out


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_pvh_boots_on_pc_machines_too(probe, machine, tmp_path):
    run = run_probe(probe, cpu="EPYC-Rome", workdir=tmp_path, machine=machine)
    assert run.ok, f"{run.observation.outcome}: {run.observation.message}"
    assert run.report.modes == ("prot32", "long64")
    assert word_diffs(run.report.tables["long64"], run.observation.feature_words) == []


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_bootsector_reports_real_mode_through_seabios(probe, machine, tmp_path):
    run = run_probe(probe, cpu="Skylake-Server", workdir=tmp_path, machine=machine, form="bootsector")
    assert run.ok, f"{run.observation.outcome}: {run.observation.message}"
    rep = run.report
    assert rep.form == "bootsector" and rep.modes == ("real", "prot32", "long64")
    fw = run.observation.feature_words
    for mode in rep.modes:
        assert word_diffs(rep.tables[mode], fw) == [], mode
    # design.md section 6: on q35 the Skylake-Server guest sees clflushopt (7.0.EBX 019803A9 region)
    assert rep.tables["real"].bit(7, 0, "ebx", 23) == fw.bit(7, 0, "ebx", 23)


def _xsave_size(xcr0: int, table: CpuidTable) -> int:
    """Architectural XSAVE area size for ``xcr0``: legacy area + header (576 bytes), or the end of
    the furthest enabled component i >= 2 (0xD.i: EAX size, EBX offset)."""
    end = 576
    for i in range(2, 63):
        if (xcr0 >> i) & 1:
            r = table.get(0xD, i)
            assert r is not None, f"0xD.{i} not enumerated although XCR0 bit {i} is set"
            end = max(end, r.ebx + r.eax)
    return end


def test_runtime_bits_osxsave_and_pke_on_max(probe, tmp_path):
    run = run_probe(probe, cpu="max", workdir=tmp_path)
    assert run.ok, run.observation.message
    rep = run.report
    for mode in rep.modes:
        table = rep.tables[mode]
        before = rep.snapshot(mode, "osxsave", "before")
        after = rep.snapshot(mode, "osxsave", "after")
        assert before.bit(1, 0, "ecx", 27) == 0 and after.bit(1, 0, "ecx", 27) == 1
        assert after.fault is None
        xcr0 = after.xcr0
        # the probe enabled every component 0xD.0 advertises
        assert xcr0 == table.reg(0xD, 0, "eax") | (table.reg(0xD, 0, "edx") << 32)
        assert before.cpuid.reg(0xD, 0, "ebx") == _xsave_size(0x1, table) == 576
        assert after.cpuid.reg(0xD, 0, "ebx") == _xsave_size(xcr0, table) > 576
        # CR4.PKE: max has PKU (7.0.ECX[3]); OSPKE (7.0.ECX[4]) follows CR4.PKE
        assert table.bit(7, 0, "ecx", 3) == 1
        pb, pa = rep.snapshot(mode, "pke", "before"), rep.snapshot(mode, "pke", "after")
        assert pb.bit(7, 0, "ecx", 4) == 0 and pa.bit(7, 0, "ecx", 4) == 1
        assert pa.cr4 & (1 << 22)


def test_pke_skipped_where_not_advertised(probe, tmp_path):
    run = run_probe(probe, cpu="EPYC-Rome", workdir=tmp_path, qmp=False)
    assert run.ok
    for mode in run.report.modes:
        assert run.report.snapshot(mode, "pke", "skip").reason == "no-pku"


def test_probe_failure_has_its_own_exit_status(probe, tmp_path):
    run = run_probe(probe, cpu="qemu64", workdir=tmp_path, append="rig.selftest=fault", qmp=False)
    obs = run.observation
    assert obs.exit_code == 35 and obs.outcome == "probe-failed"
    assert run.report is not None and run.report.status == "fail:fault-6"
    assert run.report.faults[0].mode == "prot32" and run.report.faults[0].vector == 6


def test_documented_plain_command_exits(probe, qemu_binary, tmp_path):
    """The command in the README/brief: default isa-debug-exit port (0x501), no rig options."""
    serial = tmp_path / "s.txt"
    proc = subprocess.run(
        [qemu_binary, "-M", "microvm", "-accel", "tcg", "-cpu", "EPYC-Rome", "-nodefaults", "-display", "none",
         "-no-reboot", "-serial", f"file:{serial}", "-device", "isa-debug-exit", "-kernel", str(probe.pvh)],
        capture_output=True, timeout=30,
    )
    assert proc.returncode == 33
    assert serial.read_text().rstrip().endswith("DONE status=ok")


def test_unknown_cpu_model_is_a_qemu_error(probe, tmp_path):
    run = run_probe(probe, cpu="NoSuchCPU-v9", workdir=tmp_path)
    assert run.observation.outcome == "qemu-error"
    assert "NoSuchCPU" in run.observation.message
    assert run.report is None
