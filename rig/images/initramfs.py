"""Deterministic initramfs images: newc cpio archives, gzip -1.

An image is a list of :class:`Entry` (files from disk or bytes, directories,
symlinks, device nodes).  :func:`write_initramfs` sorts them, adds missing
parent directories, gives every entry uid/gid 0, mtime 0 and a sequential
inode number, so the same entries give the same bytes.
:func:`elf_with_libraries` lists an ELF binary plus the shared libraries and
loader ``ldd`` reports, at the paths the loader will look for them.

newc format (see the kernel's Documentation/driver-api/early-userspace/
buffer-format.rst): per entry a 110-byte ASCII header ``070701`` + 13 eight-digit
hex fields, the NUL-terminated name padded to 4 bytes, the data padded to 4
bytes; the archive ends with an entry named ``TRAILER!!!``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import RigError


class InitramfsError(RigError):
    pass


@dataclass(frozen=True)
class Entry:
    """One archive member.  ``path`` is relative to the image root (no leading slash)."""

    path: str
    kind: str  # "file" | "dir" | "symlink" | "chardev" | "blockdev"
    mode: int = 0o644
    data: bytes | None = None
    source: Path | None = None
    target: str | None = None
    major: int = 0
    minor: int = 0

    def content(self) -> bytes:
        if self.kind == "symlink":
            return (self.target or "").encode()
        if self.kind != "file":
            return b""
        if self.data is not None:
            return self.data
        if self.source is None:
            raise InitramfsError(f"initramfs entry {self.path}: neither data nor source")
        try:
            return self.source.read_bytes()
        except OSError as e:
            raise InitramfsError(f"initramfs entry {self.path}: cannot read {self.source}: {e.strerror}") from e


def _norm(path: str) -> str:
    p = str(PurePosixPath("/" + path.lstrip("/")))
    if ".." in PurePosixPath(p).parts:
        raise InitramfsError(f"initramfs path {path!r} contains '..'")
    return p.lstrip("/")


def file(dest: str, source: Path | bytes | str, mode: int | None = None) -> Entry:
    """A regular file from a path (its permission bits unless ``mode``) or from bytes/str."""
    if isinstance(source, (bytes, str)):
        data = source.encode() if isinstance(source, str) else source
        return Entry(_norm(dest), "file", 0o644 if mode is None else mode, data=data)
    src = Path(source)
    if mode is None:
        try:
            mode = stat.S_IMODE(src.stat().st_mode)
        except OSError as e:
            raise InitramfsError(f"initramfs entry {dest}: cannot stat {src}: {e.strerror}") from e
    return Entry(_norm(dest), "file", mode, source=src)


def directory(dest: str, mode: int = 0o755) -> Entry:
    return Entry(_norm(dest), "dir", mode)


def symlink(dest: str, target: str) -> Entry:
    return Entry(_norm(dest), "symlink", 0o777, target=target)


def chardev(dest: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(_norm(dest), "chardev", mode, major=major, minor=minor)


_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
}


def _header(ino: int, mode: int, nlink: int, size: int, rmaj: int, rmin: int, namesize: int) -> bytes:
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, namesize, 0]
    return b"070701" + b"".join(f"{f:08X}".encode() for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def complete(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by path, with parent directories added; identical duplicates merged,
    conflicting ones an error."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        if e.kind not in _TYPE_BITS:
            raise InitramfsError(f"initramfs entry {e.path}: unknown kind {e.kind!r}")
        old = by_path.get(e.path)
        if old is not None and old != e:
            same_file = (
                old.kind == e.kind == "file" and old.mode == e.mode and old.content() == e.content()
            )
            if not same_file and not (old.kind == e.kind == "dir"):
                raise InitramfsError(f"initramfs path {e.path} given twice with different contents")
        by_path.setdefault(e.path, e)
    for path in list(by_path):
        parent = PurePosixPath(path).parent
        while str(parent) not in (".", "/", ""):
            by_path.setdefault(str(parent), directory(str(parent)))
            parent = parent.parent
    return [by_path[p] for p in sorted(by_path)]


def newc_bytes(entries: Iterable[Entry]) -> bytes:
    """The uncompressed newc archive."""
    out = io.BytesIO()
    for ino, e in enumerate(complete(entries), start=1):
        data = e.content()
        name = e.path.encode() + b"\0"
        mode = _TYPE_BITS[e.kind] | (e.mode & 0o7777)
        nlink = 2 if e.kind == "dir" else 1
        out.write(_header(ino, mode, nlink, len(data), e.major, e.minor, len(name)))
        out.write(name + _pad(110 + len(name)))
        out.write(data + _pad(len(data)))
    name = b"TRAILER!!!\0"
    out.write(_header(0, 0, 1, 0, 0, 0, len(name)) + name + _pad(110 + len(name)))
    return out.getvalue()


def gzip_bytes(raw: bytes, level: int = 1) -> bytes:
    """gzip with a zero timestamp and no file name, so equal input gives equal output."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=level, mtime=0, filename="") as gz:
        gz.write(raw)
    return buf.getvalue()


def write_initramfs(entries: Iterable[Entry], out: Path, *, level: int = 1, compress: bool = True) -> str:
    """Write a gzip'd (or, with ``compress=False``, plain) newc archive to ``out``; return the
    sha256 of the written bytes.  A plain archive boots faster under TCG (no inflate in the guest)."""
    raw = newc_bytes(entries)
    blob = gzip_bytes(raw, level) if compress else raw
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def read_newc(raw: bytes) -> list[tuple[str, int, bytes]]:
    """Parse an uncompressed newc archive into (path, mode, data); for tests and `images list`."""
    pos, out = 0, []
    while True:
        hdr = raw[pos : pos + 110]
        if len(hdr) < 110 or hdr[:6] not in (b"070701", b"070702"):
            raise InitramfsError(f"newc archive: bad header at offset {pos}")
        f = [int(hdr[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name_start = pos + 110
        name = raw[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + len(_pad(110 + namesize))
        data = raw[data_start : data_start + size]
        pos = data_start + size + len(_pad(size))
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, data))


_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def shared_libraries(binary: Path) -> list[Path]:
    """Absolute paths of the libraries and loader ``ldd`` lists for ``binary`` ([] if static)."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if proc.returncode != 0:
        raise InitramfsError(f"ldd {binary} failed: {text.strip().splitlines()[-1:] or proc.returncode}")
    libs, missing = [], []
    for line in proc.stdout.splitlines():
        if "=> not found" in line:
            missing.append(line.split()[0])
            continue
        m = _LDD_LINE.match(line)
        if m:
            libs.append(Path(m.group(2)))
    if missing:
        raise InitramfsError(f"{binary}: shared libraries not found: {', '.join(missing)}", hint="install them first")
    return libs


def elf_with_libraries(binary: Path, dest: str | None = None, mode: int = 0o755) -> list[Entry]:
    """``binary`` at ``dest`` (default: its own path) plus every library ``ldd`` lists, each at the
    path ldd printed (content read through symlinks)."""
    binary = Path(binary)
    entries = [file(dest or str(binary), binary.resolve(), mode)]
    for lib in shared_libraries(binary):
        entries.append(file(str(lib), lib.resolve(), 0o755))
    return entries


def tree(source_dir: Path, dest: str) -> list[Entry]:
    """Every file, directory and symlink under ``source_dir`` placed under ``dest``."""
    out = []
    for p in sorted(source_dir.rglob("*")):
        rel = dest.rstrip("/") + "/" + str(p.relative_to(source_dir))
        if p.is_symlink():
            out.append(symlink(rel, str(p.readlink())))
        elif p.is_dir():
            out.append(directory(rel, stat.S_IMODE(p.stat().st_mode)))
        elif p.is_file():
            out.append(file(rel, p))
    return out
