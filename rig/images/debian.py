"""Fetching Debian packages without touching the machine's apt state.

The rig needs packages from suites the machine may not have configured
(bullseye and bullseye-security for kernel 5.10, bookworm-backports for QEMU
10.0 and kernel 6.12, trixie-backports for 6.16-6.18, trixie-backports / sid
for 7.x kernels and ``linux-source-7.x``).  :class:`DebianArchive` keeps a
private apt configuration under the cache directory: a ``sources.list`` that
reuses the archive URIs already configured on this machine (``/etc/apt/
sources.list.d/*.sources`` or ``/etc/apt/sources.list``; never a hard-coded
host: the main archive for :data:`SUITES`, the security archive, when one is
configured, for :data:`SECURITY_SUITES`), its own package lists and its own
download cache.  ``apt-get download`` needs no root.  Each distinct
``sources.list`` has its own directory under ``<cache>/apt/``, so rigs of
different versions sharing one cache never discard each other's lists.

Typical use::

    arch = DebianArchive.default()
    deb = arch.download("linux-source-6.12", suite="bookworm-backports", dest=tmpdir)
    arch.extract(deb, into)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from .cache import cache_root
from .cache import digest as cache_digest

SUITES: tuple[str, ...] = ("bullseye", "bookworm", "bookworm-backports", "trixie", "trixie-backports", "sid")
#: suites of the security archive (bullseye's newest 5.10 kernels and sources are only there)
SECURITY_SUITES: tuple[str, ...] = ("bullseye-security",)
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class DebianError(RigError):
    pass


@dataclass(frozen=True)
class PackageVersion:
    name: str
    version: str
    suite: str


def _configured_uris(etc: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    """(URI, suites text) of every Debian entry configured on this machine, in file order."""
    out: list[tuple[str, str]] = []
    src_d = etc / "sources.list.d"
    for p in sorted(src_d.glob("*.sources")) if src_d.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", p.read_text(errors="replace")):
            suites = re.search(r"^Suites:(.*)$", stanza, re.M)
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if suites and uri:
                out.append((uri.group(1).rstrip("/"), suites.group(1)))
    lists = [etc / "sources.list", *sorted(src_d.glob("*.list"))] if etc.is_dir() else []
    for p in lists:
        if not p.is_file():
            continue
        for line in p.read_text(errors="replace").splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                out.append((m.group(1).rstrip("/"), m.group(2)))
    return out


_DEBIAN_SUITE = re.compile(r"\b(bullseye|bookworm|trixie|forky|sid)\b")


def _debian_uri(etc: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI configured on this machine (first deb822 or one-line entry)."""
    for uri, suites in _configured_uris(etc):
        if _DEBIAN_SUITE.search(suites) and "security" not in suites:
            return uri
    raise DebianError(
        "no Debian archive URI found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list",
        hint="configure apt for Debian first",
    )


def _security_uri(etc: Path = Path("/etc/apt")) -> str | None:
    """The Debian security archive URI configured on this machine, if any (entries with a ``*-security`` suite)."""
    for uri, suites in _configured_uris(etc):
        if re.search(r"\b(bullseye|bookworm|trixie|forky)-security\b", suites):
            return uri
    return None


@contextlib.contextmanager
def apt_lock(root: Path, mode: int) -> Iterator[None]:
    """``flock`` on a private apt tree (``root/.lock``): updates exclusive, queries shared. The rig runs apt
    with Debug::NoLocking (no root), so rigs sharing one cache (parallel jobs, fleet workers on one host)
    would otherwise query lists another rig is rewriting, and find a package missing."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_apt(tool: str, options: list[str], args: list[str], *, cwd: Path | None = None, what: str) -> str:
    """``tool OPTIONS ARGS`` (apt-get, apt-cache) with a private configuration; its stdout, or
    :class:`DebianError` with apt's last line."""
    if shutil.which(tool) is None:
        raise DebianError(f"{tool} not found", hint="this needs a Debian machine with apt")
    proc = subprocess.run([tool, *options, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise DebianError(f"{what} failed: {last}")
    return proc.stdout


@dataclass
class DebianArchive:
    """A private apt configuration rooted at ``root``."""

    root: Path
    uri: str
    suites: tuple[str, ...] = SUITES
    security_uri: str | None = None
    security_suites: tuple[str, ...] = SECURITY_SUITES
    #: "deb" (binary packages) or "deb-src" (source packages: ``apt-get source``)
    kind: str = "deb"

    @classmethod
    def default(cls) -> DebianArchive:
        uri, sec = _debian_uri(), _security_uri()
        probe = cls(Path("."), uri, security_uri=sec)
        return cls(cache_root() / "apt" / cache_digest([probe.sources_text()])[:12], uri, security_uri=sec)

    def sources_text(self) -> str:
        """The private ``sources.list``: :attr:`suites` from the main archive, :attr:`security_suites` from the
        security archive when the machine has one configured."""
        signed = f"[signed-by={KEYRING}] " if Path(KEYRING).exists() else ""
        lines = [f"{self.kind} {signed}{self.uri} {s} main\n" for s in self.suites]
        if self.security_uri:
            lines += [f"{self.kind} {signed}{self.security_uri} {s} main\n" for s in self.security_suites]
        return "".join(lines)

    # -- apt plumbing -------------------------------------------------------
    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            # keep apt's binary caches (Docker images disable them): 1.8 s -> 40 ms per query
            "-o", "Dir::Cache::pkgcache=pkgcache.bin",
            "-o", "Dir::Cache::srcpkgcache=srcpkgcache.bin",
            "-o", "Dir::State::status=/var/lib/dpkg/status",
            "-o", "APT::Get::List-Cleanup=false",
            "-o", "Debug::NoLocking=true",
        ]

    def _write_sources(self) -> None:
        (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        text = self.sources_text()
        p = self.root / "sources.list"
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
            for f in [*(self.root / "lists").glob("*_Packages*"), *(self.root / "lists").glob("*_Sources*")]:
                f.unlink()
            # the lists just removed must be fetched again, whatever the age of the last update
            (self.root / "lists" / ".updated").unlink(missing_ok=True)

    def _run(self, tool: str, args: list[str], *, cwd: Path | None = None, what: str) -> str:
        return run_apt(tool, self._options(), args, cwd=cwd, what=what)

    def _locked(self, mode: int):
        return apt_lock(self.root, mode)

    def update(self, *, force: bool = False) -> None:
        """Fetch package lists for :attr:`suites` (skipped when fresh, < 6 h)."""
        import time

        stamp = self.root / "lists" / ".updated"
        with self._locked(fcntl.LOCK_EX):
            self._write_sources()
            if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < 6 * 3600:
                return
            self._run("apt-get", ["-qq", "update"], what="apt-get update of the rig's private Debian lists")
            stamp.touch()

    # -- queries ------------------------------------------------------------
    def versions(self, package: str) -> list[PackageVersion]:
        """All versions of ``package`` in the configured suites, newest first."""
        self.update()
        with self._locked(fcntl.LOCK_SH):
            out = self._run("apt-cache", ["madison", package], what=f"apt-cache madison {package}")
        found = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[0] == package:
                words = parts[2].split()
                suite = words[1].split("/")[0] if len(words) >= 2 else "?"
                found.append(PackageVersion(package, parts[1], suite))
        return found

    def search(self, regex: str) -> list[str]:
        """Package names matching ``regex`` (names only)."""
        self.update()
        with self._locked(fcntl.LOCK_SH):
            out = self._run("apt-cache", ["search", "--names-only", regex], what=f"apt-cache search {regex}")
        return sorted({line.split(" - ", 1)[0].strip() for line in out.splitlines() if line.strip()})

    def download(self, package: str, *, dest: Path, suite: str | None = None, version: str | None = None) -> Path:
        """Download one .deb into ``dest`` (reused when already there); return its path."""
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        spec = package + (f"={version}" if version else f"/{suite}" if suite else "")
        before = set(dest.glob("*.deb"))
        name_re = re.escape(package) + "_" + (re.escape(version.split(":")[-1]) if version else "")
        existing = [p for p in before if re.match(name_re, p.name.replace("%3a", ":"))]
        if existing and version:
            return existing[0]
        self._run("apt-get", ["-qq", "download", spec], cwd=dest, what=f"apt-get download {spec}")
        new = [p for p in dest.glob(f"{package}_*.deb")]
        if not new:
            raise DebianError(f"apt-get download {spec} produced no .deb in {dest}")
        return max(new, key=lambda p: p.stat().st_mtime)

    def source_files(self, package: str, version: str, *, dest: Path,
                     diff_only: bool = False) -> dict[str, tuple[str, Path | None]]:
        """``apt-get source --download-only PACKAGE=VERSION`` (a ``deb-src`` archive) into ``dest``.

        Returns every file the Sources index lists for that version, mapped to
        (its SHA256 in the index, its path when downloaded and matching, else
        None: the archive did not serve it; mirrors may lack some parts).
        """
        import hashlib

        if self.kind != "deb-src":
            raise DebianError("source_files() needs a deb-src archive")
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        spec = f"{package}={version}"
        listing = self._run("apt-get", ["-qq", "source", "--print-uris", spec], cwd=dest,
                            what=f"apt-get source --print-uris {spec}")
        wanted = {}
        for line in listing.splitlines():
            m = re.match(r"^'[^']+'\s+(\S+)\s+\d+\s+SHA256:([0-9a-f]{64})", line)
            if m and (not diff_only or re.search(r"\.(debian\.tar\.\w+|diff\.gz)$", m.group(1))):
                wanted[m.group(1)] = m.group(2)
        if not wanted:
            raise DebianError(f"apt-get source --print-uris {spec}: no files listed")
        missing = [n for n in wanted if not (dest / n).exists()]
        if missing:
            subprocess.run(["apt-get", *self._options(), "-qq", "source", "--download-only",
                            *(["--diff-only"] if diff_only else []), spec], cwd=dest, capture_output=True, text=True)
        out: dict[str, tuple[str, Path | None]] = {}
        for name, sha in wanted.items():
            p = dest / name
            ok = False
            if p.exists():
                h = hashlib.sha256()
                with p.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                ok = h.hexdigest() == sha
                if not ok:
                    p.unlink()
            out[name] = (sha, p if ok else None)
        return out

    @staticmethod
    def extract(deb: Path, into: Path) -> Path:
        """``dpkg -x`` a package into a directory."""
        into.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise DebianError(f"{deb}: dpkg-deb -x failed: {proc.stderr.strip()}")
        return into

    @staticmethod
    def depends(deb: Path) -> list[str]:
        out = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True).stdout
        return [d.strip().split()[0] for d in out.split(",") if d.strip()]


def env_archive_root() -> Path | None:
    v = os.environ.get("RIG_APT_DIR")
    return Path(v) if v else None
