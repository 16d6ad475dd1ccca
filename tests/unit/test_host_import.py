import json
import subprocess

import pytest

from rig.host.importer import import_dump
from rig.host.profile import HostProfile, ProfileError


def test_libvirt_raw_dump_with_siblings(libvirt_data):
    prof = import_dump(libvirt_data / "x86_64-cpuid-EPYC-7713-64-Core.xml")
    assert prof.source == "import:libvirt"
    assert prof.vendor == "AuthenticAMD"
    assert prof.model_name == "AMD EPYC 7713 64-Core Processor"
    # values from the file itself (0x7.0 EBX in the XML)
    assert prof.raw.value(7, 0, "ebx") == 0x219C97A9
    assert prof.notes["msrs"]["0x10a"]
    assert "qemu_kvm_host_enabled" in prof.notes
    assert "model-expansion" in prof.notes["qmp"]
    assert not prof.kernel.flags and any("kernel caps" in m for m in prof.missing)


def test_libvirt_old_feature_words_json(libvirt_data):
    prof = import_dump(libvirt_data / "x86_64-cpuid-Core-i7-3740QM.xml")
    assert "qemu_host_feature_words" in prof.notes


def test_libvirt_enabled_file_is_refused_with_advice(libvirt_data):
    with pytest.raises(ProfileError, match="import x86_64-cpuid-EPYC-7713-64-Core.xml instead"):
        import_dump(libvirt_data / "x86_64-cpuid-EPYC-7713-64-Core-enabled.xml")


def test_cpuid_r_dump(tmp_path):
    p = tmp_path / "dump.txt"
    p.write_text("CPU 0:\n   0x00000000 0x00: eax=0x00000001 ebx=0x756e6547 ecx=0x6c65746e edx=0x49656e69\n"
                 "   0x00000001 0x00: eax=0x000906ea ebx=0x00000800 ecx=0x7ffafbbf edx=0xbfebfbff\n")
    prof = import_dump(p)
    assert prof.vendor == "GenuineIntel"
    assert prof.source == "import:cpuid-r"


def test_unknown_format(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("nothing to see\n")
    with pytest.raises(ProfileError, match="x.txt: unrecognised dump format"):
        import_dump(p)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not JSON"),
        ('{"format": "rig-cpuid/1", "entries": []}', "not a host profile"),
        ('{"format": "rig-host-profile/1"}', "missing 'raw'"),
        ('{"format": "rig-host-profile/1", "raw": {"entries": [{"leaf": "zz"}]}}', "is not an integer"),
    ],
)
def test_malformed_profiles(tmp_path, content, message):
    p = tmp_path / "p.json"
    p.write_text(content)
    with pytest.raises(ProfileError, match=message):
        HostProfile.load(p)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["host", "show", "/nonexistent/p.json"], "/nonexistent/p.json: cannot read"),
        (["host", "import", "/nonexistent/d.txt"], "/nonexistent/d.txt: cannot read"),
        (["diff", "/nonexistent/a.json", "/nonexistent/b.json"], "/nonexistent/a.json: cannot read"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(argv, message):
    r = subprocess.run(["rig", *argv], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"rig: error: {r.stderr.strip().split('rig: error: ', 1)[1]}"]
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_malformed_profile(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"format": "rig-host-profile/1", "raw": {"entries": "x"}}))
    r = subprocess.run(["rig", "host", "show", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and "bad.json: raw: 'entries' must be a list" in r.stderr
