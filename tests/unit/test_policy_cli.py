"""``rig policy ...`` as a user runs it: exit codes, output, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.cli import main
from rig.host.profile import HostProfile

ORACLE = Path(__file__).parent / "data" / "policy" / "oracle-profiles"
ROME73 = str(ORACLE / "EPYC-Rome@7.3.json")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_and_show(capsys):
    rc, out, _ = run(capsys, "policy", "list")
    assert rc == 0
    for name in ("linux-6.1 ", "linux-6.12 ", "linux-7.3 ", "linux-7.3-tsa-prefix"):
        assert name in out
    rc, out, _ = run(capsys, "policy", "show", "6.12")
    assert rc == 0 and "kvm_cpu_cap_mask" not in out and "cap_mask" in out and "6.12.117" in out


def test_check_passes_on_a_real_kvm_profile(capsys):
    rc, out, _ = run(capsys, "policy", "check", "--profile", ROME73)
    assert rc == 0 and "full agreement" in out


def test_check_fails_and_names_bits_when_the_model_is_told_a_wrong_parameter(capsys):
    rc, out, _ = run(capsys, "policy", "check", "--profile", ROME73, "--param", "kvm_amd.nested=0")
    assert rc == 1
    assert "DIFFERS" in out and "SVM 0x80000001.ECX[2] word CPUID_8000_0001_ECX: predicted 0, measured 1" in out


def test_check_with_another_kernel_version_disagrees(capsys):
    rc, out, _ = run(capsys, "policy", "check", "--profile", ROME73, "--kernel", "6.1")
    assert rc == 1 and "HYPERVISOR" in out  # 1.ECX[31] entered KVM_GET_SUPPORTED_CPUID in 6.14


def test_explain_prints_layers_with_sources(capsys):
    rc, out, _ = run(capsys, "policy", "explain", "svm", "--profile", ROME73, "--param", "kvm_amd.nested=0")
    assert rc == 0
    assert "X86_FEATURE_SVM" in out and "VENDOR_F(SVM)" in out
    assert "kvm_amd.nested=0" in out and "arch/x86/kvm/svm/svm.c:" in out
    assert "KVM_GET_SUPPORTED_CPUID 0x80000001.ECX[2] = 0" in out


def test_explain_by_location(capsys):
    rc, out, _ = run(capsys, "policy", "explain", "0x80000021.0.ecx[1]", "--profile", ROME73)
    assert rc == 0 and "X86_FEATURE_TSA_SQ_NO" in out


def test_diff_lists_rule_changes_and_supported_bits(capsys):
    rc, out, _ = run(capsys, "policy", "diff", "6.12", "7.3", "--profile", ROME73)
    assert rc == 0
    assert "macro semantics: cap_mask/- -> cap_init/fixed" in out
    assert "HYPERVISOR" in out and "EMULATED_F" in out
    assert "supported bit(s) change" in out and "HYPERVISOR 0x1.ECX[31]: 0 -> 1" in out


def test_predict_writes_a_table(capsys, tmp_path):
    out_file = tmp_path / "pred.json"
    rc, _, err = run(capsys, "policy", "predict", "--profile", ROME73, "-o", str(out_file))
    assert rc == 0 and out_file.exists()
    measured = HostProfile.load(ROME73).kvm.supported
    from rig.cpuid.table import CpuidTable

    assert CpuidTable.load(out_file).diff(measured) == []


@pytest.mark.parametrize("argv, message", [
    (["policy", "explain", "NO_SUCH_FEATURE", "--profile", ROME73], "unknown feature 'NO_SUCH_FEATURE'"),
    (["policy", "explain", "ZEN", "--profile", ROME73], "Linux-defined flag"),
    (["policy", "check", "--profile", ROME73, "--param", "nested=0"], "name the module"),
    (["policy", "check", "--profile", ROME73, "--param", "kvm_amd.nested"], "expected MODULE.PARAM=VALUE"),
    (["policy", "check", "--profile", ROME73, "--kernel", "4.19"], "no policy at or below kernel 4.19"),
    (["policy", "check", "--profile", ROME73, "--kernel", "banana"], "neither a policy name nor a kernel version"),
    (["policy", "diff", "7.3", "7.3-tsa-prefx"], "did you mean 7.3-tsa-prefix?"),
    (["policy", "check", "--profile", "/nonexistent.json"], "cannot read"),
    (["policy", "import", "/tmp"], "not a kernel source tree"),
])
def test_bad_input_gives_one_line_errors(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and message in err and "Traceback" not in err


def test_check_without_measured_supported_cpuid(capsys, tmp_path):
    d = json.loads(Path(ROME73).read_text())
    d["kvm"]["supported"] = None
    d["kvm"]["error"] = "no /dev/kvm"
    p = tmp_path / "p.json"
    p.write_text(json.dumps(d))
    rc, _, err = run(capsys, "policy", "check", "--profile", str(p))
    assert rc == 2 and "no measured KVM_GET_SUPPORTED_CPUID" in err


def test_libvirt_profile_needs_a_kernel_version(capsys, libvirt_data, tmp_path):
    from rig.host.importer import import_dump

    p = tmp_path / "zen3.json"
    import_dump(libvirt_data / "x86_64-cpuid-EPYC-7713-64-Core.xml").save(p)
    rc, _, err = run(capsys, "policy", "explain", "TSA_SQ_NO", "--profile", str(p))
    assert rc == 2 and "--kernel" in err
    rc, out, _ = run(capsys, "policy", "explain", "TSA_SQ_NO", "--profile", str(p), "--kernel", "6.18")
    assert rc == 0 and "pre-fix SYNTHESIZED_F" in out and "KVM_GET_SUPPORTED_CPUID 0x80000021.ECX[1] = 1" in out
    assert "kernel caps are assumed" in out


def test_libvirt_agreement_command(capsys, libvirt_data, tmp_path):
    rc, out, _ = run(capsys, "policy", "libvirt", str(libvirt_data), "--kernel", "6.12")
    assert rc == 0 and "EPYC-7713-64-Core" in out and "total " in out
    rc, _, err = run(capsys, "policy", "libvirt", str(tmp_path))
    assert rc == 2 and "no libvirt" in err


def test_check_known_differences_pass_only_with_allow_known(capsys, tmp_path):
    known = tmp_path / "known.json"
    known.write_text(json.dumps({"format": "rig-kvm-known-differences/1", "entries": [
        {"id": "svm-off", "feature": "SVM", "reason": "test: nested off", "src": "arch/x86/kvm/svm/svm.c"},
        *({"id": f"leaf-a-{r}{b}", "location": f"0x8000000a.0.{r}[{b}]", "reason": "test", "src": "cpuid.c"}
          for r in ("eax", "ebx", "edx") for b in range(32))]}))
    argv = ["policy", "check", "--profile", ROME73, "--param", "kvm_amd.nested=0", "--known", str(known)]
    rc, out, _ = run(capsys, *argv)
    assert rc == 1 and "known [svm-off]" in out and "--allow-known accepts them" in out
    rc, out, _ = run(capsys, *argv, "--allow-known")
    assert rc == 0 and "agreement apart from known differences" in out
    rc, out, _ = run(capsys, "policy", "check", "--profile", ROME73, "--param", "kvm_amd.npt=0", "--known", str(known),
                     "--allow-known")
    assert rc == 1 and "DIFFERS" in out  # NPT is not covered by the file


def test_no_command_approximates_silently(capsys, tmp_path, monkeypatch):
    """6.14 has no policy: explain, check, predict and diff all say APPROXIMATE, name linux-6.12 and the command
    that gets the exact one; 6.12.57 (same series as the imported 6.12.117) and 7.3 do not."""
    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))  # empty user store
    want = ("APPROXIMATE", "linux-6.12", "rig policy get 6.14")
    rc, out, err = run(capsys, "policy", "explain", "TSA_SQ_NO", "--profile", ROME73, "--kernel", "6.14")
    assert rc == 0 and all(w in out for w in want)
    rc, out, err = run(capsys, "policy", "check", "--profile", ROME73, "--kernel", "6.14")
    assert all(w in out for w in want)
    rc, out, err = run(capsys, "policy", "predict", "--profile", ROME73, "--kernel", "6.14")
    assert rc == 0 and all(w in err for w in want)
    rc, out, err = run(capsys, "policy", "diff", "6.14", "7.3")
    assert rc == 0 and all(w in out for w in want)
    for exact in ("6.12.57", "7.3"):
        rc, out, err = run(capsys, "policy", "check", "--profile", ROME73, "--kernel", exact)
        assert "APPROXIMATE" not in out + err, exact
    # the hand-written 6.16 stand-in is approximate too, even when named
    rc, out, err = run(capsys, "policy", "predict", "--profile", ROME73, "--kernel", "6.16")
    assert "APPROXIMATE" in err and "linux-6.17" in err


def test_user_store_sits_beside_the_shipped_policies(capsys, tmp_path, monkeypatch):
    """A policy imported with --store is found by version; it never replaces a shipped one."""
    from importlib import resources

    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))
    d = json.loads(resources.files("rig.policy").joinpath("data/linux-6.12.json").read_text())
    d["version"] = "6.14"
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "linux-6.14.json").write_text(json.dumps(d))
    rc, out, _ = run(capsys, "policy", "list")
    assert "linux-6.14" in out and "linux-7.3 " in out
    rc, out, err = run(capsys, "policy", "check", "--profile", ROME73, "--kernel", "6.14.2")
    assert "policy linux-6.14 for kernel 6.14.2" in out and "APPROXIMATE" not in out + err
    rc, _, err = run(capsys, "policy", "import", "/nonexistent", "--store")
    assert rc == 2 and "no such directory" in err
