"""The probe transcript parser (guests/probe/PROTOCOL.md) on a real transcript and on broken ones.

``data/probe-bootsector-epyc-rome-tcg.txt`` is the serial log of the boot-sector
probe under QEMU 7.2 TCG (``-M q35 -cpu EPYC-Rome``). Its values were checked
against QEMU's EPYC-Rome definition: family 17h model 31h stepping 0
(1.EAX 00830F10), vendor AuthenticAMD, 7.0.EBX 019801A9 (the value design.md
section 4 also measured for EPYC-Rome under real KVM).
The broken variants are made by editing that file, so each case breaks exactly
one framing rule.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from rig.guest.protocol import ProbeProtocolError, parse_file, parse_transcript, probe_check

DATA = Path(__file__).parent / "data"
REAL = (DATA / "probe-bootsector-epyc-rome-tcg.txt").read_text()


def frame(mode: str, body: list[str]) -> list[str]:
    """A section framed per PROTOCOL.md: count and zlib CRC-32 over MODE..last body line."""
    lines = [f"MODE {mode}", *body]
    crc = 0
    for ln in lines:
        crc = zlib.crc32((ln + "\n").encode(), crc)
    return [*lines, f"END {mode} {len(lines)} {crc:08x}"]


def pvh(*sections: list[str], done: str = "DONE status=ok") -> str:
    out = ["RIGPROBE v=1 form=pvh"]
    for s in sections:
        out += s
    return "\n".join([*out, done]) + "\n"


CPU0 = "C 00000000 00000000 0000000d 68747541 444d4163 69746e65"
CPU7 = "C 00000007 00000000 00000000 219c03a9 00000000 00000000"


# -- the real transcript ---------------------------------------------------------


def test_real_bootsector_transcript_has_three_modes():
    r = parse_transcript(REAL, case="epyc-rome")
    assert r.ok and r.form == "bootsector" and r.version == 1
    assert r.modes == ("real", "prot32", "long64")
    for mode in r.modes:
        t = r.tables[mode]
        assert t.vendor == "AuthenticAMD"
        assert t.reg(1, 0, "eax") == 0x00830F10
        # 0xD subleaves are enumerated from the XCR0 bits 0xD.0 advertises
        assert t.subleaves(0xD) == [0, 1, 2]
    assert r.tables["real"] == r.tables["prot32"] == r.tables["long64"]


def test_real_transcript_runtime_osxsave_changes_leaf1_and_0xd():
    r = parse_transcript(REAL)
    for mode in r.modes:
        before = r.snapshot(mode, "osxsave", "before")
        after = r.snapshot(mode, "osxsave", "after")
        assert before and after and after.fault is None
        assert before.bit(1, 0, "ecx", 27) == 0 and after.bit(1, 0, "ecx", 27) == 1
        assert after.cr4 is not None and after.cr4 & (1 << 18)
        assert after.xcr0 == 0x7  # x87, SSE, AVX: 0xD.0.EAX of EPYC-Rome under TCG
        # 0xD.0.EBX is the XSAVE area size for the enabled XCR0: 0x240 (x87 only) -> 0x340 (+ SSE, AVX)
        assert before.cpuid.reg(0xD, 0, "ebx") == 0x240 and after.cpuid.reg(0xD, 0, "ebx") == 0x340
        pke = r.runtime[mode][-1]
        assert (pke.experiment, pke.phase, pke.reason) == ("pke", "skip", "no-pku")


def test_parse_file_keeps_path(tmp_path):
    p = tmp_path / "serial.log"
    p.write_text(REAL[: len(REAL) // 2])
    with pytest.raises(ProbeProtocolError) as e:
        parse_file(p, case="half")
    assert e.value.transcript_path == p and str(p) in str(e.value)


# -- broken transcripts ----------------------------------------------------------


def _error(text: str, case: str = "c1") -> ProbeProtocolError:
    with pytest.raises(ProbeProtocolError) as e:
        parse_transcript(text, case=case)
    err = e.value
    assert err.case == case and f"case {case}" in str(err)
    assert err.transcript == text  # the raw transcript is kept
    return err


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_transcript(cut):
    err = _error(REAL[: int(len(REAL) * cut)])
    assert "truncated" in err.problem or "not a protocol line" in err.problem


def test_truncated_after_end_before_done():
    text = REAL[: REAL.index("DONE")]
    assert "no DONE" in _error(text).problem


def test_empty_serial_log():
    assert "no RIGPROBE header" in _error("SeaBIOS (version 1.16)\nBooting from Hard Disk...\n").problem


def test_garbled_register_fails_crc():
    # one bit of 7.0.EBX flipped in the real-mode section (EPYC-Rome under TCG: 019801A9)
    assert "C 00000007 00000000 00000000 019801a9" in REAL
    text = REAL.replace("019801a9", "019801a8", 1)
    err = _error(text)
    assert "section real CRC-32" in err.problem and "garbled" in err.problem and err.line is not None


def test_garbage_line_inside_section():
    i = REAL.index("\nC 00000001")
    err = _error(REAL[:i] + "\nC 0000zz01 00000000" + REAL[i:])
    assert "not a protocol line inside section MODE real" in err.problem


def test_lost_line_fails_count():
    lines = REAL.split("\n")
    del lines[3]
    err = _error("\n".join(lines))
    assert "END says" in err.problem


def test_section_without_end():
    text = pvh(frame("prot32", [CPU0])[:-1])
    err = _error(text)
    assert "without END" in err.problem


def test_mismatched_end():
    sec = frame("prot32", [CPU0])
    sec[-1] = sec[-1].replace("END prot32", "END long64")
    assert "closes section" in _error(pvh(sec)).problem


def test_duplicate_leaf():
    assert "reported twice" in _error(pvh(frame("prot32", [CPU0, CPU0]), frame("long64", [CPU0]))).problem


def test_mode_not_of_form():
    assert "not reported by the pvh form" in _error(pvh(frame("real", [CPU0]))).problem


def test_ok_with_missing_mode():
    assert "long64" in _error(pvh(frame("prot32", [CPU0]))).problem


def test_unsupported_version():
    assert "version 2" in _error("RIGPROBE v=2 form=pvh\nDONE status=ok\n").problem


def test_rc_without_rt():
    sec = frame("prot32", [CPU0, "RC 00000001 00000000 00000000 00000000 00000000 00000000"])
    assert "RC line without" in _error(pvh(sec, frame("long64", [CPU0]))).problem


# -- well-formed synthetic transcripts -------------------------------------------


def test_noise_before_header_and_after_done_is_ignored():
    text = "SeaBIOS noise\r\n" + pvh(frame("prot32", [CPU0]), frame("long64", [CPU0, CPU7])) + "[ 1.0] kernel log\n"
    r = parse_transcript(text)
    assert r.ok and r.modes == ("prot32", "long64")
    assert r.tables["long64"].reg(7, 0, "ebx") == 0x219C03A9
    assert r.tables["prot32"].get(7, 0) is None


def test_skipped_long_mode():
    r = parse_transcript(pvh(frame("prot32", [CPU0]), ["SKIP long64 reason=no-lm"]))
    assert r.ok and r.skipped == {"long64": "no-lm"} and r.modes == ("prot32",)


def test_fault_inside_section_is_a_failed_report_not_an_error():
    sec = frame("prot32", [CPU0])[:-1] + ["FAULT mode=prot32 vec=6 err=00000000 ip=0000000000100f40"]
    r = parse_transcript(pvh(sec, done="DONE status=fail:fault-6"))
    assert not r.ok and r.status == "fail:fault-6" and r.incomplete == "prot32"
    assert r.faults[0].vector == 6 and r.faults[0].ip == 0x100F40
    assert r.tables == {}


def test_runtime_fault_recorded():
    body = [
        CPU0,
        "RT osxsave before cr4=00000000 xcr0=- fault=-",
        "RT osxsave after cr4=00000000 xcr0=- fault=cr4:13",
        "RC 00000001 00000000 00000000 00000000 00000000 00000000",
    ]
    r = parse_transcript(pvh(frame("prot32", body), frame("long64", [CPU0])))
    after = r.snapshot("prot32", "osxsave", "after")
    assert after.fault and (after.fault.step, after.fault.vector) == ("cr4", 13)
    assert after.cpuid.reg(1, 0, "ecx") == 0 and after.xcr0 is None
    assert r.to_json()["runtime"]["prot32"][1]["fault"] == "cr4:13"


def test_probe_check_for_the_launcher():
    check = probe_check("c1")
    good = pvh(frame("prot32", [CPU0]), frame("long64", [CPU0]))
    assert check(good, 33).complete
    assert not check(good, 0).complete  # reported, but QEMU did not exit through the probe
    v = check(good[: len(good) // 2], 33)
    assert not v.complete and "truncated" in v.message
    failed = pvh(frame("prot32", [CPU0])[:-1], done="DONE status=fail:fault-6")
    v = check(failed, 35)
    assert not v.complete and "fail:fault-6" in v.message
