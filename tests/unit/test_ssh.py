"""SSH guest logic without booting: keys, parsers, configuration errors, QEMU command line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest

from rig.guest.ssh import (
    SshConfigError,
    SshGuest,
    _not_up_reason,
    cpu_kernel_messages,
    fingerprint,
    load_private_key,
    parse_cpuinfo_lists,
    parse_host_key,
    parse_vulnerabilities,
    read_host_key,
)
from rig.images.ssh import SshImage, SshImageError, SshImageRecipe, _ed25519_keypair, build_rootfs
from rig.qemu.cmdline import QemuCommand


@pytest.fixture(scope="module")
def keypair():
    return _ed25519_keypair("test")


def test_parse_host_key_forms(keypair):
    _, pub = keypair
    ktype, blob = parse_host_key(pub)
    assert ktype == "ssh-ed25519" and blob[4:15] == b"ssh-ed25519"
    # a known_hosts line, and a bare "type base64"
    assert parse_host_key(f"[127.0.0.1]:2222 {' '.join(pub.split()[:2])}") == (ktype, blob)


def test_parse_host_key_rejects_bad_lines(keypair):
    _, pub = keypair
    with pytest.raises(SshConfigError, match="not an SSH public key"):
        parse_host_key("hello world")
    with pytest.raises(SshConfigError, match="does not match its type ssh-rsa"):
        parse_host_key("ssh-rsa " + pub.split()[1])


def test_read_host_key_from_a_file(tmp_path, keypair):
    _, pub = keypair
    p = tmp_path / "host.pub"
    p.write_text(pub + "\n")
    assert read_host_key(p) == parse_host_key(pub)
    with pytest.raises(SshConfigError, match="cannot read"):
        read_host_key(tmp_path / "nope.pub")


def test_fingerprint_matches_ssh_keygen(tmp_path, keypair):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed (openssh-client, scripts/setup.sh)")
    _, pub = keypair
    p = tmp_path / "k.pub"
    p.write_text(pub + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(p)], capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == fingerprint(parse_host_key(pub)[1])


def test_private_key_errors(tmp_path, keypair):
    with pytest.raises(SshConfigError, match="does not exist"):
        load_private_key(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    with pytest.raises(SshConfigError, match="not a usable private key"):
        load_private_key(bad)
    good = tmp_path / "good"
    good.write_bytes(keypair[0])
    assert load_private_key(good).get_name() == "ssh-ed25519"


# Real lines from the rig's Debian 6.1 cloud guest under TCG -cpu EPYC-Rome, plus noise.
DMESG = """\
[    0.000000] Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org)
[    0.000000] x86/fpu: Supporting XSAVE feature 0x004: 'AVX registers'
[    0.103113] Spectre V2 : Mitigation: Retpolines
[    0.103200] RETBleed: Mitigation: untrained return thunk
[    0.104000] Speculative Return Stack Overflow: Mitigation: safe RET, no microcode
[    0.210000] smpboot: CPU0: AMD EPYC-Rome Processor (family: 0x17, model: 0x31, stepping: 0x0)
[    0.300000] virtio_blk virtio1: [vda] 714752 512-byte logical blocks
[    1.000000] EXT4-fs (vda): mounted filesystem with ordered data mode
"""


def test_cpu_kernel_messages_keep_feature_and_mitigation_lines():
    msgs = cpu_kernel_messages(DMESG)
    assert msgs == (
        "x86/fpu: Supporting XSAVE feature 0x004: 'AVX registers'",
        "Spectre V2 : Mitigation: Retpolines",
        "RETBleed: Mitigation: untrained return thunk",
        "Speculative Return Stack Overflow: Mitigation: safe RET, no microcode",
        "smpboot: CPU0: AMD EPYC-Rome Processor (family: 0x17, model: 0x31, stepping: 0x0)",
    )


def test_cpuinfo_and_vulnerabilities_parsers():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx\nbugs\t\t: spectre_v1 srso\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert parse_cpuinfo_lists(cpuinfo) == (("fpu", "sse2", "avx"), ("spectre_v1", "srso"))
    vulns = parse_vulnerabilities(
        "/sys/devices/system/cpu/vulnerabilities/tsa:Not affected\n"
        "/sys/devices/system/cpu/vulnerabilities/spectre_v2:Mitigation: Retpolines; STIBP: disabled\n"
    )
    assert vulns == {"tsa": "Not affected", "spectre_v2": "Mitigation: Retpolines; STIBP: disabled"}


@pytest.fixture()
def fake_image(tmp_path, keypair):
    """An image directory as `rig images build ssh` writes it (files need not boot here)."""
    priv, pub = keypair
    for name in ("disk.img", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"\0" * 16)
    (tmp_path / "id_ed25519").write_bytes(priv)
    img = SshImage(tmp_path, tmp_path / "disk.img", tmp_path / "vmlinuz", tmp_path / "initrd.img",
                   tmp_path / "id_ed25519", pub, "root", "console=ttyS0 root=/dev/vda", "/opt/rig", "6.1.0-test")
    (tmp_path / "image.json").write_text(json.dumps(img.to_json()))
    return tmp_path


def test_image_json_round_trip_and_errors(fake_image):
    img = SshImage.load(fake_image)
    assert img.disk == fake_image / "disk.img" and img.user == "root"
    d = json.loads((fake_image / "image.json").read_text())
    (fake_image / "image.json").write_text(json.dumps({**d, "format": "other/1"}))
    with pytest.raises(SshImageError, match="format 'other/1'"):
        SshImage.load(fake_image)


def test_qemu_argv_forwards_loopback_only_and_never_writes_the_image(fake_image):
    g = SshGuest(fake_image)
    argv = g.qemu_argv(QemuCommand(machine="q35", accel="tcg", cpu="Skylake-Server,-avx2"), 2222, fake_image / "s.log")
    joined = " ".join(argv)
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined
    assert f"file={fake_image / 'disk.img'},format=raw,if=virtio,snapshot=on" in argv
    assert argv[argv.index("-cpu") + 1] == "Skylake-Server,-avx2"
    assert argv[argv.index("-kernel") + 1] == str(fake_image / "vmlinuz")
    assert argv[argv.index("-m") + 1] == "512M"
    assert "isa-debug-exit" not in joined and "-qmp" not in argv


def test_microvm_is_refused(fake_image):
    with pytest.raises(SshConfigError, match="PC machine"):
        SshGuest(fake_image).qemu_argv(QemuCommand(machine="microvm"), 2222, fake_image / "s.log")


def test_user_image_needs_its_login(tmp_path, keypair):
    disk = tmp_path / "cloud.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 60)
    with pytest.raises(SshConfigError, match="needs user, key, host_key"):
        SshGuest(disk)
    with pytest.raises(SshConfigError, match="does not exist"):
        SshGuest(tmp_path / "missing.qcow2", "u", "k", keypair[1])
    (tmp_path / "k").write_bytes(keypair[0])
    g = SshGuest(disk, "debian", tmp_path / "k", keypair[1])
    argv = g.qemu_argv(QemuCommand(machine="q35"), 2200, tmp_path / "s.log")
    assert "-kernel" not in argv  # the user's image boots with its own bootloader
    assert any("format=qcow2,if=virtio,snapshot=on" in a for a in argv)


def test_from_spec(tmp_path, keypair, fake_image):
    (tmp_path / "k").write_bytes(keypair[0])
    (tmp_path / "host.pub").write_text(keypair[1])
    (tmp_path / "d.img").write_bytes(b"\0" * 512)
    g = SshGuest.from_spec({"type": "ssh", "image": "d.img", "user": "me", "key": "k", "host_key": "host.pub"},
                           base=tmp_path)
    assert g.user == "me" and g.boot_disk.disk == tmp_path / "d.img" and g.boot_disk.disk_format == "raw"
    assert (g.host_key_type, g.host_key_blob) == parse_host_key(keypair[1])
    with pytest.raises(SshConfigError, match="unknown ssh guest field"):
        SshGuest.from_spec({"type": "ssh", "image": "d.img", "password": "x"}, base=tmp_path)
    g = SshGuest.from_spec({"type": "ssh", "image": str(fake_image)})
    assert g.boot_disk.kernel == fake_image / "vmlinuz"


def test_recipe_keys(tmp_path):
    r = SshImageRecipe.load()
    assert r.suite == "bookworm" and r.variant == "minbase" and "openssh-server" in r.include
    # The kernel command line and init belong to the image, not to the slow debootstrap stage.
    assert dataclasses.replace(r, append="x", init="y").rootfs_key() == r.rootfs_key()
    assert dataclasses.replace(r, include=(*r.include, "vim")).rootfs_key() != r.rootfs_key()
    p = tmp_path / "r.toml"
    p.write_text('suite = "bookworm"\n')
    with pytest.raises(SshImageError, match="lacks 'variant'"):
        SshImageRecipe.load(p)


def test_reasons_given_while_the_guest_boots():
    import paramiko

    assert "sshd not listening yet" in _not_up_reason(paramiko.SSHException("No existing session"))
    assert "sshd not listening yet" in _not_up_reason(EOFError())
    assert _not_up_reason(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert _not_up_reason(TimeoutError()) == "no answer (timed out)"


def test_image_build_needs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))  # nothing cached there
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(SshImageError, match=r"needs root .*sudo rig images build ssh"):
        build_rootfs(SshImageRecipe.load(), log=lambda m: None)
