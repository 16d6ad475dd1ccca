"""A root of its own Debian suite: a package and its whole dependency closure, unpacked without root.

QEMU 11.1 (trixie-backports, sid) needs a newer C library and newer shared
libraries (``GLIBC_2.38``, ``libcapstone.so.5``, ``libfuse3.so.4``,
``libaio.so.1t64``) than a Debian 12 machine has.  Instead of a chroot, the rig
unpacks the binary and every library it needs from *its* suite into a tree and
starts the binary through that tree's dynamic loader::

    ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path ROOT/usr/lib/x86_64-linux-gnu \\
        ROOT/usr/bin/qemu-system-x86_64 ...

The process lives in the machine's own file system (no chroot), so QMP sockets,
``-kernel`` paths and serial logs under the rig's run directories work as for
any other binary.  Shared objects QEMU loads later (its modules) are found
through the same ``--library-path``.

The closure is resolved by apt itself: a private apt configuration (under
``<cache>/apt-roots/<suites>/``) with only the root's suites and an *empty*
dpkg status, so ``apt-get install --download-only`` downloads the package and
everything it depends on, down to ``libc6``.  It needs neither root nor
debootstrap; the archive URI is the one the machine's apt already uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from .cache import cache_root, digest
from .debian import KEYRING, DebianError, _debian_uri, apt_lock, run_apt

LIBDIR = "usr/lib/x86_64-linux-gnu"
LOADER = f"{LIBDIR}/ld-linux-x86-64.so.2"


class SuiteRootError(RigError):
    pass


@dataclass(frozen=True)
class SuiteApt:
    """A private apt configuration for a set of suites with nothing installed."""

    root: Path
    uri: str
    suites: tuple[str, ...]
    #: also list source packages (deb-src) of these suites
    sources: bool = False

    @classmethod
    def for_suites(cls, suites: Sequence[str], *, sources: bool = False) -> SuiteApt:
        tag = "+".join(suites) + ("+src" if sources else "")
        return cls(cache_root() / "apt-roots" / tag, _debian_uri(), tuple(suites), sources)

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=/dev/null",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "Dir::Cache::pkgcache=pkgcache.bin",
            "-o", "Dir::Cache::srcpkgcache=srcpkgcache.bin",
            # an empty dpkg status: apt resolves the whole closure, libc6 included
            "-o", f"Dir::State::status={self.root / 'status'}",
            "-o", "APT::Get::List-Cleanup=false",
            "-o", "APT::Install-Recommends=false",
            "-o", "Debug::NoLocking=true",
        ]

    def _prepare(self) -> None:
        for d in ("lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        status = self.root / "status"
        if not status.exists():
            status.write_text("")
        signed = f"[signed-by={KEYRING}] " if Path(KEYRING).exists() else ""
        kinds = ("deb", "deb-src") if self.sources else ("deb",)
        text = "".join(f"{k} {signed}{self.uri} {s} main\n" for s in self.suites for k in kinds)
        p = self.root / "sources.list"
        if not p.exists() or p.read_text() != text:
            p.write_text(text)

    def _run(self, args: list[str], what: str) -> str:
        try:
            with apt_lock(self.root, fcntl.LOCK_SH):
                return run_apt("apt-get", self.options(), args, what=what)
        except DebianError as e:
            raise SuiteRootError(e.args[0], hint="the Debian archive must be reachable once") from None

    def update(self, *, max_age: float = 6 * 3600) -> None:
        import time

        stamp = self.root / "lists" / ".updated"
        with apt_lock(self.root, fcntl.LOCK_EX):
            self._prepare()
            if stamp.exists() and time.time() - stamp.stat().st_mtime < max_age:
                return
            try:
                run_apt("apt-get", self.options(), ["-qq", "update"], what=f"apt-get update for {'+'.join(self.suites)}")
            except DebianError as e:
                raise SuiteRootError(e.args[0], hint="the Debian archive must be reachable once") from None
            stamp.touch()

    def closure(self, packages: Sequence[str], target: str) -> list[tuple[str, str]]:
        """(name, version) of every package ``apt-get install`` would unpack for ``packages``
        (taken from suite ``target`` where it has them), dependencies included."""
        self.update()
        # resolving from an empty status takes seconds: kept until the package lists change
        stamp = (self.root / "lists" / ".updated").stat().st_mtime_ns
        memo = self.root / f"closure-{digest([target, *packages])}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            saved = json.loads(memo.read_text())
            if saved["lists"] == stamp:
                return [(n, v) for n, v in saved["closure"]]
        out = self._run(["-s", "-y", "-t", target, "install", *packages], "apt-get -s install (dependency closure)")
        found = []
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "Inst":
                found.append((words[1], words[2].strip("()[]")))
        if not found:
            raise SuiteRootError(f"apt resolved nothing for {' '.join(packages)} in {'+'.join(self.suites)}")
        found.sort()
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"lists": stamp, "closure": found}))
        tmp.replace(memo)
        return found

    def download(self, packages: Sequence[str], target: str) -> list[Path]:
        """Download ``packages`` and their closure; the .deb files (in the private apt cache)."""
        self.update()
        self._run(["-qq", "-y", "-t", target, "install", "--download-only", *packages],
                  "apt-get install --download-only")
        return sorted((self.root / "cache" / "archives").glob("*.deb"))


    def source(self, package: str, version: str, dest: Path) -> Path:
        """Download and unpack (``dpkg-source -x``, Debian patches applied) one source package version
        into ``dest``; returns the source tree."""
        if not self.sources:
            raise SuiteRootError("this apt configuration lists no source packages (sources=False)")
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["apt-get", *self.options(), "-qq", "source", "--download-only", f"{package}={version}"],
                              cwd=dest, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise SuiteRootError(f"apt-get source {package}={version} failed: {last}",
                                 hint="the archive may not carry this source version any more")
        dsc = sorted(dest.glob(f"{package}_*.dsc"))
        if not dsc:
            raise SuiteRootError(f"apt-get source {package}={version} left no .dsc in {dest}")
        tree = dest / "src"
        proc = subprocess.run(["dpkg-source", "-x", str(dsc[-1]), str(tree)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SuiteRootError(f"dpkg-source -x {dsc[-1].name} failed: {proc.stderr.strip()[-200:]}")
        return tree


def unpack(debs: Sequence[Path], root: Path, *, log: Callable[[str], None] | None = None) -> None:
    """``dpkg-deb -x`` every package into ``root`` (no maintainer scripts: nothing is configured)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, deb in enumerate(debs):
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SuiteRootError(f"{deb.name}: dpkg-deb -x failed: {proc.stderr.strip()}")
        if log and (i + 1) % 25 == 0:
            log(f"unpacked {i + 1}/{len(debs)} packages")


def loader_argv(root: Path, elf: str, *, check: bool = True) -> list[str]:
    """The command that runs ``root/elf`` with ``root``'s own C library and shared libraries
    (``check=False``: for a root that is about to be moved to ``root``)."""
    loader = root / LOADER
    if check and not loader.exists():
        raise SuiteRootError(f"{loader} missing: libc6 was not unpacked into the root")
    return [str(loader), "--library-path", f"{root / LIBDIR}:{root / 'lib/x86_64-linux-gnu'}", str(root / elf)]
