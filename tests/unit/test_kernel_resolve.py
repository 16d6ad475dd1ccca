"""Kernel requests against an archive's package names: layouts, series, errors (rig/images/kernel.py).

The names below are the ones Debian's archive lists (2026-12): 5.10 in bullseye(-security), 6.16-6.18 in
trixie-backports as one linux-image-* package, 6.19/7.1 split but with their linux-modules-* gone (a meta
linux-image-* and a linux-binary-* remain), 7.3 split and complete.  The archive object answers the two
queries kernel.py asks (names, versions) from these lists; no network.
"""

from __future__ import annotations

import pytest

from rig.images import debian
from rig.images import kernel as k

NAMES = {
    "linux-image-5.10.0-43-cloud-amd64-unsigned": "5.10.251-5",
    "linux-image-5.10.0-32-cloud-amd64-unsigned": "5.10.223-1",
    "linux-image-6.16.12+deb13-cloud-amd64": "6.16.12-1~bpo13+1",
    "linux-image-6.16.3+deb13-cloud-amd64": "6.16.3-1~bpo13+1",
    "linux-image-6.18.15+deb13-cloud-amd64": "6.18.15-1~bpo13+1",
    "linux-image-6.19.14+deb13-cloud-amd64": "6.19.14-1~bpo13+1",
    "linux-binary-6.19.14+deb13-cloud-amd64": "6.19.14-1~bpo13+1",
    "linux-image-7.1.13+deb13-cloud-amd64": "7.1.13-1~bpo13+1",
    "linux-binary-7.1.13+deb13-cloud-amd64": "7.1.13-1~bpo13+1",
    "linux-image-7.3.4+deb13-cloud-amd64": "7.3.4-1~bpo13+1",
    "linux-binary-unsigned-7.3.4+deb13-cloud-amd64": "7.3.4-1~bpo13+1",
    "linux-modules-7.3.4+deb13-cloud-amd64": "7.3.4-1~bpo13+1",
}


class ListedArchive:
    """The two queries of DebianArchive that kernel resolution uses, answered from NAMES."""

    def search(self, regex: str) -> list[str]:
        import re

        return sorted(n for n in NAMES if re.search(regex, n))

    def versions(self, package: str) -> list[debian.PackageVersion]:
        return [debian.PackageVersion(package, NAMES[package], "x")] if package in NAMES else []


def test_series_picks_newest_point_release_and_full_version_exactly():
    a = ListedArchive()
    assert k.resolve("6.16", a).release == "6.16.12+deb13-cloud-amd64"
    assert k.resolve("6.16.3", a).release == "6.16.3+deb13-cloud-amd64"
    assert k.resolve("6.16.3+deb13-cloud-amd64", a).release == "6.16.3+deb13-cloud-amd64"
    assert k.resolve("5.10", a).release == "5.10.0-43-cloud-amd64"
    c = k.resolve("6.18", a)
    assert (c.layout, c.packages[0][0]) == ("single", "linux-image-6.18.15+deb13-cloud-amd64")
    c = k.resolve("7.3", a)
    assert c.layout == "split"
    assert [p[0] for p in c.packages] == ["linux-binary-unsigned-7.3.4+deb13-cloud-amd64",
                                         "linux-modules-7.3.4+deb13-cloud-amd64"]
    assert k.resolve("7.x", a).release == "7.3.4+deb13-cloud-amd64"
    assert [c.release for c in k.choices("6.16", a)] == ["6.16.12+deb13-cloud-amd64", "6.16.3+deb13-cloud-amd64"]


def test_split_release_without_modules_is_not_a_single_package_kernel():
    """6.19/7.1: the linux-image-* left is the split layout's meta package; they have no KVM."""
    a = ListedArchive()
    assert "6.19.14+deb13-cloud-amd64" not in k.available_kernels(a)
    with pytest.raises(k.KernelError) as e:
        k.resolve("6.19", a)
    msg = str(e.value)
    assert "without their modules package: 6.19.14+deb13-cloud-amd64" in msg
    assert "6.18 (6.18.15)" in msg and "5.10 (5.10.0-43, 5.10.0-32)" in msg


def test_unknown_version_is_an_error_listing_what_exists():
    with pytest.raises(k.KernelError) as e:
        k.resolve("6.14", ListedArchive())
    msg = str(e.value)
    assert "'6.14'" in msg
    for series in ("7.3 (7.3.4)", "6.16 (6.16.12, 6.16.3)", "5.10 ("):
        assert series in msg
    with pytest.raises(k.KernelError):
        k.resolve("bogus", ListedArchive())


def test_private_sources_reuse_the_configured_uris(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert debian._debian_uri(etc) == "http://mirror.example/debian"
    assert debian._security_uri(etc) == "http://mirror.example/debian-security"
    arch = debian.DebianArchive(tmp_path / "root", debian._debian_uri(etc), security_uri=debian._security_uri(etc))
    text = arch.sources_text()
    assert "http://mirror.example/debian bullseye main" in text
    assert "http://mirror.example/debian-security bullseye-security main" in text
    # no security archive configured: no security suites
    assert "security" not in debian.DebianArchive(tmp_path, "http://m/debian").sources_text()


def test_changed_sources_refetch_lists(tmp_path):
    """A changed sources.list drops the old lists and the freshness stamp with them (lists must be fetched)."""
    arch = debian.DebianArchive(tmp_path, "http://m/debian", suites=("bookworm",))
    arch._write_sources()
    (tmp_path / "lists" / "x_Packages.lz4").write_text("")
    (tmp_path / "lists" / ".updated").write_text("")
    debian.DebianArchive(tmp_path, "http://m/debian", suites=("bookworm", "sid"))._write_sources()
    assert not (tmp_path / "lists" / "x_Packages.lz4").exists()
    assert not (tmp_path / "lists" / ".updated").exists()


class GoneArchive(ListedArchive):
    """Lists every package but delivers none (the archive's 404 for files it still lists)."""

    def download(self, package, *, dest, suite=None, version=None):
        raise debian.DebianError(f"apt-get download {package}={version} failed: 404  Not Found")


def test_listed_but_gone_releases_are_skipped_for_a_series_and_errors_for_an_exact_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RIG_CACHE_DIR", str(tmp_path))
    with pytest.raises(k.KernelError) as e:
        k.fetch_kernel("5.10.0-43-cloud-amd64", GoneArchive())
    assert "5.10.0-43-cloud-amd64" in str(e.value) and "404" in str(e.value)
    with pytest.raises(k.KernelError) as e:
        k.fetch_kernel("5.10", GoneArchive())
    assert "tried 5.10.0-43-cloud-amd64, 5.10.0-32-cloud-amd64" in str(e.value)
    # the failures are remembered: the next series request does not download again, and says so
    with pytest.raises(k.KernelError) as e:
        k.fetch_kernel("5.10", GoneArchive())
    assert "tried 5.10.0-43-cloud-amd64, 5.10.0-32-cloud-amd64" in str(e.value)


def test_upstream_version_of_an_abi_named_release_picks_it_by_package_version():
    """5.10/6.1 releases are named by ABI (5.10.0-43); `5.10.251` means the one built from linux 5.10.251."""
    a = ListedArchive()
    assert k.resolve("5.10.251", a).release == "5.10.0-43-cloud-amd64"
    assert k.resolve("5.10.223", a).release == "5.10.0-32-cloud-amd64"
    with pytest.raises(k.KernelError, match="'5.10.999'"):
        k.resolve("5.10.999", a)
