"""The linux guest (Debian cloud kernel + busybox-static + user probe) under real QEMU TCG.

The image is built through the rig's own path: the kernel and busybox-static
are fetched with ``apt-get download`` into the cache (the first run needs the
network, later runs find the entries). The references are QEMU itself (QMP
feature-words of the same process) and the bare-metal probe booted with the
same ``-cpu``.
"""

from __future__ import annotations

import hashlib

import pytest

from rig.cpuid.catalogue import catalogue
from rig.guest.linux_run import boot_linux
from rig.guest.probe_run import run_probe
from rig.guest.quirks import mismatching_words
from rig.images import initramfs as ir
from rig.images.kernel import release_series
from rig.images.linux import build_linux_image, cached_images
from rig.images.probe import build_probe

pytestmark = pytest.mark.e2e

MODELS = ("qemu64", "Skylake-Server", "EPYC-Rome", "max")


@pytest.fixture(scope="module")
def image(qemu_binary):
    return build_linux_image()


def test_image_build_is_cached_and_deterministic(image):
    again = build_linux_image()
    assert again == image
    assert image in cached_images()
    assert image.release.endswith("-cloud-amd64")
    meta_sha = __import__("json").loads((image.directory / "linux.json").read_text())["initrd_sha256"]
    assert hashlib.sha256(image.initrd.read_bytes()).hexdigest() == meta_sha
    members = {name: (mode, data) for name, mode, data in ir.read_newc(image.initrd.read_bytes())}
    assert members["init"][1].startswith(b"#!/bin/sh")
    assert members["bin/busybox"][1][:4] == b"\x7fELF" and members["bin/probe-user"][1][:4] == b"\x7fELF"
    assert "bin/sh" in members and "sbin/poweroff" in members  # busybox applet links
    assert image.vmlinux.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("cpu", MODELS)
def test_linux_guest_agrees_with_probe_and_qmp(image, cpu, tmp_path):
    lr = boot_linux(image, cpu=cpu, workdir=tmp_path / "linux")
    assert lr.ok, f"{lr.observation.outcome}: {lr.message} ({lr.error})"
    rep = lr.report
    assert rep.release == image.release
    fw = lr.observation.feature_words
    pr = run_probe(build_probe(), cpu=cpu, workdir=tmp_path / "probe")
    assert pr.ok, pr.observation.message
    bare = pr.report.tables["long64"]
    user = rep.table
    # CPUID: the user-mode probe in Linux, the bare-metal probe and QMP agree on every feature word
    # (runtime bits aside: the guest kernel has set CR4.OSXSAVE and CR4.PKE)
    assert [w.describe() for w in mismatching_words(user, fw)] == []
    assert [w.describe() for w in mismatching_words(user, bare.masked(fw))] == []
    # the guest kernel's CR4.OSXSAVE is visible to the user-mode probe wherever XSAVE exists
    assert user.bit(1, 0, "ecx", 27) == user.bit(1, 0, "ecx", 26)

    # /proc/cpuinfo flags against the CPUID bits, with the kernel rules that add or drop flags
    cat = catalogue()
    universe = {f.cpuinfo for f in cat.features if f.cpuinfo and fw.reg(f.leaf, f.subleaf, f.reg) is not None}
    expected = {f.cpuinfo for f in cat.features
                if f.cpuinfo in universe and bare.bit(f.leaf, f.subleaf, f.reg, f.bit)}
    amd = bare.vendor == "AuthenticAMD"
    if amd and bare.bit(0x80000001, 0, "edx", 29):
        expected.add("3dnowprefetch")  # arch/x86/kernel/cpu/amd.c: "3DNow or LM implies PREFETCHW"
    if bare.bit(7, 0, "ecx", 3):
        expected.add("ospke")  # the kernel sets CR4.PKE where PKU exists
    optional = {"la57"}  # cleared when the kernel runs with 4-level paging
    seen = set(rep.flags) & universe
    assert seen - expected == set()
    assert expected - seen <= optional

    # the guest kernel's verdicts are there
    assert {"spectre_v1", "spectre_v2", "meltdown"} <= set(rep.vulnerabilities)
    assert all(v for v in rep.vulnerabilities.values())


def test_kernel_is_selectable(tmp_path):
    img = build_linux_image("6.1")
    assert release_series(img.release) == "6.1"
    lr = boot_linux(img, cpu="EPYC-Rome", workdir=tmp_path)
    assert lr.ok, lr.message
    assert lr.report.release == img.release and lr.report.release.startswith("6.1.")
    # the 6.1 kernel's own vulnerability files (it predates e.g. 7.x's newer entries)
    assert "spec_store_bypass" in lr.report.vulnerabilities


def test_truncated_guest_output_is_an_error_with_transcript(image, tmp_path):
    """A guest that cannot finish in time: the launcher's timeout, and the transcript kept."""
    lr = boot_linux(image, cpu="qemu64", workdir=tmp_path, timeout=1.0, qmp=False)
    assert not lr.ok and lr.observation.outcome == "timeout"
    assert lr.report is None
    assert (tmp_path / "serial.log").exists()
