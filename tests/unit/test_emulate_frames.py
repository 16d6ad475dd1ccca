"""The L1 data channel framing, the L1 profile section and KVM parameter parsing (pure logic)."""

from __future__ import annotations

import zlib

import pytest

from rig.emulate.frames import FrameError, FrameReader
from rig.emulate.host import EmulateError, params_label, parse_host_spec, parse_params
from rig.emulate.l1profile import parse_profile
from rig.emulate.l2 import L2Result, parse_qmp_section


def frame(name: str, lines: list[str], *, crc: int | None = None, count: int | None = None) -> bytes:
    payload = "".join(s + "\n" for s in lines).encode()
    c = zlib.crc32(payload) if crc is None else crc
    n = len(lines) if count is None else count
    return f"@@BEGIN {name}\n".encode() + payload + f"@@END {name} lines={n} crc={c:08X}\n".encode()


def test_frames_split_across_reads_and_cr_stripped():
    data = frame("a", ["one", "two"]) + frame("b", [])
    data = data.replace(b"\n", b"\r\n")
    r = FrameReader()
    got = []
    for i in range(0, len(data), 7):
        got += r.feed(data[i : i + 7])
    assert [(f.name, f.lines) for f in got] == [("a", ("one", "two")), ("b", ())]
    assert got[0].text == "one\ntwo\n"


def test_frame_crc_and_count_are_checked():
    with pytest.raises(FrameError, match="CRC"):
        FrameReader().feed(frame("a", ["x"], crc=0))
    with pytest.raises(FrameError, match="has 1 lines"):
        FrameReader().feed(frame("a", ["x"], count=2))
    # a truncated section (no trailer of its own) yields nothing
    assert FrameReader().feed(b"@@BEGIN a\nx\n@@END b lines=1 crc=00000000\n") == []


def test_payload_may_look_like_framing():
    (f,) = FrameReader().feed(frame("case/1/serial", ["@@BEGIN other", "@@END other lines=0 crc=00000000", "x"]))
    assert f.lines == ("@@BEGIN other", "@@END other lines=0 crc=00000000", "x")


def test_frame_crc_covers_non_utf8_bytes():
    payload = b"\xff\xfe\n"
    data = b"@@BEGIN s\n" + payload + f"@@END s lines=1 crc={zlib.crc32(payload):08X}\n".encode()
    (f,) = FrameReader().feed(data)
    assert f.name == "s" and len(f.lines) == 1


def test_parse_params():
    assert parse_params(["npt=0", "kvm.enable_pmu=N", "kvm-amd.nested=0"]) == {
        "kvm_amd.npt": "0", "kvm.enable_pmu": "N", "kvm_amd.nested": "0"}
    assert params_label(parse_params(["nested=0", "kvm_amd.npt=0"])) == "nested=0,npt=0"
    for bad in ["npt", "=1", "foo.bar=1", "npt= 0"]:
        with pytest.raises(EmulateError):
            parse_params([bad])


PROFILE = [
    "release 6.1.0-50-cloud-amd64",
    "cmdline console=ttyS0 kvm_amd.npt=0",
    "model_name AMD EPYC-Rome Processor",
    "flags fpu vme svm",
    "bugs spectre_v1",
    "module kvm",
    "param kvm enable_pmu N",
    "module kvm_amd",
    "param kvm_amd npt N",
    "raw 00000000 0 0000000D 68747541 444D4163 69746E65",
    "raw 00000007 0 00000000 019801A9 00000004 00000000",
    "api 12",
    "sup 00000007 0 1 00000000 019801A9 00000004 00000000",
    "sup 80000001 0 0 00000000 00000000 00000004 00000000",
    "emu 00000007 0 1 00000000 00000000 00400000 00000000",
]


def test_parse_profile():
    p = parse_profile(PROFILE, name="emulated:test")
    assert p.source == "emulated" and p.kernel.release == "6.1.0-50-cloud-amd64"
    assert p.kernel.flags == ["fpu", "vme", "svm"] and p.kernel.bugs == ["spectre_v1"]
    assert p.raw.vendor == "AuthenticAMD" and p.raw.value(7, 0, "ebx") == 0x019801A9
    assert p.kvm.api_version == 12 and p.kvm.vendor_module == "kvm_amd"
    assert p.kvm.params("kvm_amd") == {"npt": "N"}
    assert p.kvm.supported.value(0x80000001, 0, "ecx") == 4
    assert p.kvm.supported_entries[0] == [7, 0, 1, 0, 0x019801A9, 4, 0]
    assert p.kvm.emulated.value(7, 0, "ecx") == 0x00400000
    assert p.missing == []


def test_parse_profile_without_kvm_records_why():
    p = parse_profile(PROFILE[:10] + ["api-error No such file or directory"])
    assert p.kvm.supported is None
    assert "No such file" in p.kvm.error and p.missing


def test_parse_profile_rejects_garbage():
    with pytest.raises(FrameError, match="line 2"):
        parse_profile(["release x", "raw zz"])


def test_qmp_section_and_feature_words():
    lines = (
        'query-cpus-fast {"return": [{"qom-path": "/machine/unattached/device[0]"}]}',
        'feature-words {"return": [{"cpuid-register": "EBX", "cpuid-input-ecx": 0, "cpuid-input-eax": 7, "features": 27787689}]}',
        "error QMP conversation ended early",
    )
    replies, errors = parse_qmp_section(lines)
    r = L2Result(1, [], 33, 10, "", "", 0.1, 0.2, replies, errors)
    assert r.probe_ok and not r.timed_out
    assert r.feature_words().value(7, 0, "ebx") == 0x01A801A9
    assert r.filtered_features() is None
    assert errors == ["QMP conversation ended early"]


def test_parse_host_spec():
    h = parse_host_spec("emulated:EPYC-Rome@6.12,npt=0,kvm.enable_pmu=N")
    assert (h.cpu, h.kernel, h.params) == ("EPYC-Rome", "6.12", {"kvm_amd.npt": "0", "kvm.enable_pmu": "N"})
    assert str(h) == "emulated:EPYC-Rome@6.12,kvm.enable_pmu=N,npt=0"
    assert parse_host_spec("max@7.x").params == {}
    for bad in ["EPYC-Rome", "emulated:@6.1", "EPYC@", "EPYC@6.1,npt"]:
        with pytest.raises(EmulateError):
            parse_host_spec(bad)
