"""The linux guest's framed output (guests/linux/init -> rig.guest.linux) on a real transcript and broken ones.

``data/linux-6.1-epyc-rome-tcg.txt`` is the serial log of the linux guest
(Debian 6.1 cloud kernel) under QEMU 7.2 TCG with ``-cpu EPYC-Rome``. The
md5 values in it were computed by busybox md5sum inside the guest. The
expectations below were read from that run: Zen 2 under TCG, so the guest
kernel lists the AMD bugs (sysret_ss_attrs, null_seg, srso) and the
spec_rstack_overflow file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.guest.linux import LinuxProtocolError, parse_linux_transcript

REAL = (Path(__file__).parent / "data" / "linux-6.1-epyc-rome-tcg.txt").read_text()


def test_real_transcript():
    r = parse_linux_transcript(REAL, case="linux-rome")
    assert r.release == "6.1.0-50-cloud-amd64"
    assert r.probe_rc == 0 and r.probe.form == "user" and r.probe.ok
    assert r.table.vendor == "AuthenticAMD" and r.table.reg(1, 0, "eax") == 0x00830F10
    assert {"fpu", "sse2", "lm", "avx2"} <= set(r.flags)
    assert {"sysret_ss_attrs", "null_seg", "srso", "spectre_v1"} <= set(r.bugs)
    assert r.vulnerabilities["spectre_v1"].startswith("Mitigation: usercopy/swapgs barriers")
    assert r.vulnerabilities["spec_rstack_overflow"] == "Mitigation: safe RET, no microcode"
    assert len(r.vulnerabilities) == 17
    # the guest kernel had CR4.OSXSAVE on: the user probe saw it and XCR0 = x87|SSE|AVX
    snap = r.probe.snapshot("user", "osxsave", "observed")
    assert snap.xcr0 == 0x7 and snap.bit(1, 0, "ecx", 27) == 1
    assert r.to_json()["vulnerabilities"]["tsa"] == "Not affected"


def _error(text: str) -> LinuxProtocolError:
    with pytest.raises(LinuxProtocolError) as e:
        parse_linux_transcript(text, case="lx")
    assert e.value.transcript == text and "case lx" in str(e.value)
    return e.value


def test_console_noise_between_sections_is_skipped():
    text = REAL.replace("SECTION flags\n", "[    2.1] random: crng init done\nSECTION flags\n", 1)
    assert parse_linux_transcript(text).flags == parse_linux_transcript(REAL).flags


def test_noise_inside_a_section_is_garbage():
    text = REAL.replace("SECTION bugs\n", "SECTION bugs\n[    2.1] random: crng init done\n", 1)
    assert "section bugs has 2 lines" in _error(text).problem


def test_garbled_value_fails_md5():
    text = REAL.replace("l1tf: Not affected", "l1tf: Not affectex", 1)
    assert "md5" in _error(text).problem and "garbled" in _error(text).problem


@pytest.mark.parametrize("cut", [0.05, 0.3, 0.6, 0.95])
def test_truncated(cut):
    assert "truncated" in _error(REAL[: int(len(REAL) * cut)]).problem or "no RIGLINUX header" in _error(
        REAL[: int(len(REAL) * cut)]
    ).problem


def test_missing_section():
    start = REAL.index("SECTION bugs")
    end = REAL.index("SECTION vulnerabilities")
    assert "section(s) bugs missing" in _error(REAL[:start] + REAL[end:]).problem


def test_kernel_never_reached_init():
    assert "no RIGLINUX header" in _error("[    0.0] Linux version 6.1\nKernel panic - not syncing\n").problem


def test_broken_probe_section_is_named():
    # drop the probe's DONE line and fix up the section framing, so only the probe protocol is broken
    import hashlib

    head, rest = REAL.split("SECTION probe\n", 1)
    body, tail = rest.split("ENDSECTION probe ", 1)
    lines = [ln for ln in body.splitlines() if not ln.startswith("DONE")]
    md5 = hashlib.md5("".join(ln + "\n" for ln in lines).encode()).hexdigest()
    tail = tail.split("\n", 1)[1]
    text = head + "SECTION probe\n" + "\n".join(lines) + f"\nENDSECTION probe lines={len(lines)} md5={md5} rc=0\n" + tail
    err = _error(text)
    assert err.problem.startswith("probe section:") and "no DONE" in err.problem
