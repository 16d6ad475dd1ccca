"""Debian cloud kernels, fetched and unpacked into the rig's cache.

``fetch_kernel("6.1" | "6.12" | "7.3" | "7.x" | "newest" | a full release)``
resolves the request against the package names of the rig's private apt
lists (:class:`rig.images.debian.DebianArchive`), downloads the packages of
the chosen release (layouts and flavour in ``images/kernels.toml``), unpacks
them with ``dpkg-deb -x`` into a content-addressed cache entry keyed by the
package versions, and returns a :class:`DebianKernel`.  A second call finds
the entry and does nothing; with no network, a cached kernel that matches the
request is used.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RigError
from . import cache
from .debian import DebianArchive, DebianError
from .recipes import read_recipe

KIND = "kernel"


class KernelError(RigError):
    pass


@dataclass(frozen=True)
class Layout:
    """One package layout: every entry of ``packages`` (alternatives) must exist, none of ``unless``."""

    name: str
    packages: tuple[tuple[str, ...], ...]
    unless: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelRecipe:
    flavour: str
    layouts: tuple[Layout, ...]
    aliases: dict[str, str]


def load_recipe(path: Path | None = None) -> KernelRecipe:
    """Read ``images/kernels.toml`` (or ``path``)."""
    try:
        text = path.read_text() if path else read_recipe("kernels.toml")
        data = tomllib.loads(text)
        layouts = tuple(
            Layout(str(lay["name"]), tuple(tuple(str(a) for a in alts) for alts in lay["packages"]),
                   tuple(str(u) for u in lay.get("unless", ())))
            for lay in data["layouts"]
        )
        return KernelRecipe(str(data["flavour"]), layouts, {str(k): str(v) for k, v in data.get("aliases", {}).items()})
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as e:
        raise KernelError(f"{path or 'images/kernels.toml'}: bad kernel recipe: {e}") from e


@dataclass(frozen=True, order=True)
class ReleaseKey:
    """Sort key of a release: (major, minor, patch, abi, debian revision tag)."""

    major: int
    minor: int
    patch: int
    abi: int
    deb: int


def release_key(release: str) -> ReleaseKey | None:
    """``6.1.0-50-cloud-amd64`` → (6,1,0,50,0); ``7.3.4+deb13-cloud-amd64`` → (7,3,4,0,13)."""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:-(\d+))?(?:\+deb(\d+))?", release)
    if not m:
        return None
    return ReleaseKey(*(int(g) if g else 0 for g in m.groups()))


def release_series(release: str) -> str:
    k = release_key(release)
    return f"{k.major}.{k.minor}" if k else release


@dataclass(frozen=True)
class DebianKernel:
    """An unpacked Debian kernel.

    ``modules_dir`` is ``.../lib/modules/RELEASE``; use :meth:`module_path`
    to get a loadable (decompressed) ``.ko`` for a module name.
    """

    release: str
    package_version: str
    vmlinuz: Path
    modules_dir: Path
    config: Path | None
    packages: tuple[str, ...] = ()
    root: Path | None = None

    @property
    def series(self) -> str:
        return release_series(self.release)

    def _find(self, name: str) -> Path:
        base = name.removesuffix(".ko")
        variants = {base, base.replace("-", "_"), base.replace("_", "-")}
        hits: list[Path] = []
        for v in sorted(variants):
            for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
                hits.extend(self.modules_dir.rglob(v + ext))
        if not hits:
            raise KernelError(
                f"module {name!r} not found under {self.modules_dir}",
                hint="check the name (e.g. kvm, kvm-amd, irqbypass) and that this kernel builds it as a module",
            )
        return sorted(hits, key=lambda p: (len(p.parts), str(p)))[0]

    def module_path(self, name: str) -> Path:
        """A plain ``.ko`` for module ``name`` (``kvm-amd`` or ``kvm_amd``); compressed ones are
        decompressed once into the cache entry."""
        src = self._find(name)
        if src.suffix == ".ko":
            return src
        out_dir = (self.root or self.modules_dir) / "decompressed"
        out = out_dir / (src.name.rsplit(".ko", 1)[0] + ".ko")
        if out.exists():
            return out
        out_dir.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".xz":
            data = lzma.decompress(src.read_bytes())
        elif src.suffix == ".gz":
            import gzip

            data = gzip.decompress(src.read_bytes())
        else:
            proc = subprocess.run(["zstd", "-dc", str(src)], capture_output=True)
            if proc.returncode != 0:
                raise KernelError(f"{src}: zstd -dc failed", hint="install zstd")
            data = proc.stdout
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".ko.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
        return out

    def vmlinux(self) -> Path:
        """The uncompressed kernel ELF inside ``vmlinuz`` (see :func:`extract_vmlinux`)."""
        return extract_vmlinux(self)

    def module_depends(self, name: str) -> list[str]:
        """Direct dependencies of a module, from its ``.modinfo`` ``depends=`` field."""
        data = self.module_path(name).read_bytes()
        m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
        if not m or not m.group(1):
            return []
        return [d.decode() for d in m.group(1).split(b",") if d]

    def module_load_order(self, name: str) -> list[Path]:
        """Decompressed ``.ko`` paths for ``name`` and its dependencies, dependencies first."""
        order: list[str] = []

        def visit(n: str, stack: tuple[str, ...]) -> None:
            key = n.replace("-", "_")
            if key in order:
                return
            if key in stack:
                raise KernelError(f"module dependency cycle through {n} in {self.modules_dir}")
            for dep in self.module_depends(n):
                visit(dep, (*stack, key))
            order.append(key)

        visit(name, ())
        return [self.module_path(n) for n in order]


@dataclass(frozen=True)
class KernelChoice:
    """A resolved request: the release and the exact packages to fetch."""

    release: str
    layout: str
    packages: tuple[tuple[str, str, str], ...]  # (name, version, suite)
    key: str = field(default="")


def _releases(names: list[str], flavour: str) -> list[str]:
    rx = re.compile(rf"^linux-(?:image|binary)-(?:unsigned-)?([0-9][^ ]*-{re.escape(flavour)})(?:-unsigned)?$")
    found = {m.group(1) for n in names if (m := rx.match(n))}
    return sorted((r for r in found if release_key(r)), key=lambda r: release_key(r), reverse=True)  # type: ignore[arg-type, return-value]


def _layout_for(release: str, names: set[str], recipe: KernelRecipe) -> tuple[str, tuple[str, ...]] | None:
    for lay in recipe.layouts:
        if any(u.format(release=release) in names for u in lay.unless):
            continue
        chosen = []
        for alts in lay.packages:
            hit = next((a.format(release=release) for a in alts if a.format(release=release) in names), None)
            if hit is None:
                break
            chosen.append(hit)
        else:
            return lay.name, tuple(chosen)
    return None


def matches(release: str, request: str, recipe: KernelRecipe) -> bool:
    """Does ``release`` satisfy a version request (series, prefix, full release, or newest)?"""
    req = recipe.aliases.get(request, request)
    if req == "newest":
        return True
    if release == req:
        return True
    key = release_key(release)
    if key is None:
        return False
    parts = req.split(".")
    if not all(p.isdigit() for p in parts):
        return False
    nums = [key.major, key.minor, key.patch]
    return [int(p) for p in parts] == nums[: len(parts)]


def _names(archive: DebianArchive, recipe: KernelRecipe) -> list[str]:
    flav = re.escape(recipe.flavour)
    return archive.search(rf"^linux-(image|binary|modules)-.*{flav}(-unsigned)?$")


def available_kernels(archive: DebianArchive | None = None) -> list[str]:
    """Releases that can be fetched from the configured suites, newest first."""
    recipe = load_recipe()
    archive = archive or DebianArchive.default()
    names = _names(archive, recipe)
    name_set = set(names)
    return [r for r in _releases(names, recipe.flavour) if _layout_for(r, name_set, recipe)]


def choices(version: str = "newest", archive: DebianArchive | None = None, *,
            limit: int | None = None) -> list[KernelChoice]:
    """Every release matching ``version`` with KVM modules, newest first, with the package versions to fetch
    (needs the apt lists).  A request matching nothing is a :class:`KernelError` listing what exists."""
    recipe = load_recipe()
    archive = archive or DebianArchive.default()
    names = _names(archive, recipe)
    name_set = set(names)
    tried: list[str] = []
    out: list[KernelChoice] = []
    for release in _releases(names, recipe.flavour):
        if not matches(release, version, recipe):
            continue
        lay = _layout_for(release, name_set, recipe)
        c = _choice(release, lay, archive, recipe) if lay else None
        if c is None:
            tried.append(release)
            continue
        out.append(c)
        if limit is not None and len(out) >= limit:
            break
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if not out and m and int(m.group(3)) > 0:
        # 5.10 and 6.1 releases carry an ABI number (6.1.0-50), the upstream version is the package's
        for release in _releases(names, recipe.flavour):
            key = release_key(release)
            if key is None or (key.major, key.minor, key.patch) != (int(m.group(1)), int(m.group(2)), 0):
                continue
            lay = _layout_for(release, name_set, recipe)
            c = _choice(release, lay, archive, recipe) if lay else None
            if c is not None and c.packages[0][1].split(":")[-1].startswith(version + "-"):
                out.append(c)
    if out:
        return out
    detail = f" (in the archive without their modules package: {', '.join(tried[:4])})" if tried else ""
    offered = series_summary([r for r in _releases(names, recipe.flavour) if _layout_for(r, name_set, recipe)])
    raise KernelError(
        f"no Debian {recipe.flavour} kernel with KVM modules matches {version!r}{detail}; the configured suites "
        f"offer {offered or 'none'}",
        hint="ask for a series (e.g. 6.16: its newest point release) or an exact release; "
             "`rig images kernels` lists every release",
    )


def _choice(release: str, lay: tuple[str, tuple[str, ...]], archive: DebianArchive,
            recipe: KernelRecipe) -> KernelChoice | None:
    """The packages of ``release`` in layout ``lay`` with their newest versions (None when one is not listed)."""
    pkgs = []
    for name in lay[1]:
        vs = archive.versions(name)
        if not vs:
            return None
        pkgs.append((name, vs[0].version, vs[0].suite))
    key = cache.digest(["kernel", recipe.flavour, *(f"{n}={v}" for n, v, _ in pkgs)])
    return KernelChoice(release, lay[0], tuple(pkgs), key)


def resolve(version: str = "newest", archive: DebianArchive | None = None) -> KernelChoice:
    """The newest release matching ``version`` (see :func:`choices`)."""
    return choices(version, archive, limit=1)[0]


def series_summary(releases: list[str]) -> str:
    """``6.18 (6.18.15 ... 6.18.5), 6.1 (6.1.0-50, 6.1.0-47)``: series, newest first, with their releases."""
    by: dict[str, list[str]] = {}
    for r in releases:
        by.setdefault(release_series(r), []).append(r.removesuffix("-cloud-amd64").removesuffix("+deb13")
                                                     .removesuffix("+deb12").removesuffix("+deb14"))
    parts = []
    for series, rs in by.items():
        shown = ", ".join(rs) if len(rs) <= 3 else f"{rs[0]} ... {rs[-1]}"
        parts.append(f"{series} ({shown})")
    return ", ".join(parts)


def _meta_path(entry: Path) -> Path:
    return entry / "kernel.json"


def _load(entry: Path) -> DebianKernel:
    try:
        meta = json.loads(_meta_path(entry).read_text())
    except (OSError, ValueError) as e:
        raise KernelError(f"{entry}: unreadable kernel cache entry ({e})", hint="delete the directory and fetch again") from e
    root = entry / "root"
    return DebianKernel(
        release=meta["release"],
        package_version=meta["package_version"],
        vmlinuz=root / meta["vmlinuz"],
        modules_dir=root / meta["modules_dir"],
        config=(root / meta["config"]) if meta.get("config") else None,
        packages=tuple(meta.get("packages", ())),
        root=entry,
    )


def cached_kernels() -> list[DebianKernel]:
    """Complete kernel entries in the cache, newest release first."""
    base = cache.cache_root() / KIND
    out = []
    for entry in sorted(base.glob("*")) if base.is_dir() else []:
        if cache.is_complete(entry) and _meta_path(entry).exists():
            try:
                out.append(_load(entry))
            except KernelError:
                continue
    return sorted(out, key=lambda k: release_key(k.release) or ReleaseKey(0, 0, 0, 0, 0), reverse=True)


def _locate(root: Path, release: str) -> tuple[Path, Path, Path | None]:
    mods = [root / p / release for p in ("usr/lib/modules", "lib/modules") if (root / p / release).is_dir()]
    if not mods:
        raise KernelError(f"{root}: no lib/modules/{release} in the unpacked packages")
    # prefer the directory holding kernel/ (modules); vmlinuz may sit in another one
    modules_dir = next((m for m in mods if (m / "kernel").is_dir()), mods[0])
    vm = [root / "boot" / f"vmlinuz-{release}", *(m / n for m in mods for n in ("vmlinuz", "vmlinuz.unsigned"))]
    vmlinuz = next((v for v in vm if v.is_file()), None)
    if vmlinuz is None:
        raise KernelError(f"{root}: no vmlinuz for {release} (looked in boot/ and lib/modules/{release}/)")
    cfg = [root / "boot" / f"config-{release}", *(m / "config" for m in mods)]
    config = next((c for c in cfg if c.is_file()), None)
    return vmlinuz, modules_dir, config


#: how long a package version the archive failed to deliver (HTTP 404: listed, file gone) is skipped
UNAVAILABLE_SECONDS = 24 * 3600


def _unavailable_marker(choice: KernelChoice) -> Path:
    return cache.cache_root() / KIND / "unavailable" / choice.key


def _is_unavailable(choice: KernelChoice) -> bool:
    import time

    m = _unavailable_marker(choice)
    return m.exists() and time.time() - m.stat().st_mtime < UNAVAILABLE_SECONDS


def fetch_kernel(version: str = "newest", archive: DebianArchive | None = None) -> DebianKernel:
    """Fetch (or find in the cache) the Debian kernel matching ``version``.

    A series (``6.16``) or ``newest`` gets the newest matching release whose packages the archive delivers:
    when the newest is listed but its files are gone (seen for 5.10's newest security uploads), the next
    one is taken and a line on stderr says which and why.  An exact release gets exactly that one or an error.
    """
    import sys

    recipe = load_recipe()
    try:
        options = choices(version, archive)
    except DebianError as e:
        # offline: fall back to a cached kernel that matches
        for k in cached_kernels():
            if matches(k.release, version, recipe):
                return k
        raise KernelError(f"cannot resolve kernel {version!r}: {e}", hint="network to the Debian archive is needed once") from e
    exact = len(options) == 1 or any(c.release == recipe.aliases.get(version, version) for c in options)
    skipped: list[str] = []
    last: DebianError | None = None
    for choice in options:
        entry = cache.entry_dir(KIND, choice.key)
        if cache.is_complete(entry):
            kernel = _load(entry)
        elif not exact and _is_unavailable(choice):
            skipped.append(choice.release)
            continue
        else:
            try:
                kernel = _build(choice, archive or DebianArchive.default())
            except DebianError as e:
                if exact:
                    raise KernelError(f"kernel {choice.release}: {e}",
                                      hint="the archive lists it but did not deliver it; ask for another release "
                                           "(`rig images kernels`)") from e
                _unavailable_marker(choice).parent.mkdir(parents=True, exist_ok=True)
                _unavailable_marker(choice).write_text(f"{e}\n")
                skipped.append(choice.release)
                last = e
                continue
        if skipped:
            print(f"rig: kernel {version}: using {kernel.release}; newer {', '.join(skipped)} listed in the archive "
                  f"but not downloadable{f' ({last})' if last else ' (failed within the last day)'}", file=sys.stderr)
        return kernel
    why = str(last) if last else f"each failed within the last {UNAVAILABLE_SECONDS // 3600} h"
    raise KernelError(f"no kernel matching {version!r} could be downloaded (tried {', '.join(skipped)}): {why}",
                      hint=f"check the network to the Debian archive; failures are remembered in "
                           f"{_unavailable_marker(options[0]).parent} (delete it to retry now)")


def _build(choice: KernelChoice, archive: DebianArchive) -> DebianKernel:
    entry = cache.entry_dir(KIND, choice.key)
    with cache.building(KIND, choice.key) as tmp:
        debs = tmp / "debs"
        root = tmp / "root"
        for name, ver, _suite in choice.packages:
            deb = archive.download(name, dest=debs, version=ver)
            archive.extract(deb, root)
        for deb in debs.glob("*.deb"):
            deb.unlink()
        debs.rmdir()
        vmlinuz, modules_dir, config = _locate(root, choice.release)
        meta = {
            "release": choice.release,
            "package_version": choice.packages[0][1],
            "layout": choice.layout,
            "packages": [f"{n}={v}" for n, v, _ in choice.packages],
            "suites": sorted({s for _, _, s in choice.packages}),
            "vmlinuz": str(vmlinuz.relative_to(root)),
            "modules_dir": str(modules_dir.relative_to(root)),
            "config": str(config.relative_to(root)) if config else None,
        }
        _meta_path(tmp).write_text(json.dumps(meta, indent=2) + "\n")
    return _load(entry)


# ---------------------------------------------------------------- vmlinux

#: compressed-payload magics of a bzImage (Documentation/arch/x86/boot.rst, payload_offset)
_PAYLOAD_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x7fELF", "none"),
)


def bzimage_payload(data: bytes, where: str = "bzImage") -> tuple[str, bytes]:
    """(format, compressed bytes) of a bzImage's protected-mode payload.

    Boot protocol 2.08+: ``setup_sects`` at 0x1F1 (0 means 4), ``payload_offset``
    and ``payload_length`` at 0x248/0x24C, relative to the protected-mode code at
    ``(setup_sects + 1) * 512``.
    """
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise KernelError(f"{where}: not a bzImage (no HdrS boot header)")
    version = int.from_bytes(data[0x206:0x208], "little")
    if version < 0x208:
        raise KernelError(f"{where}: boot protocol {version >> 8}.{version & 0xFF} has no payload fields")
    setup_sects = data[0x1F1] or 4
    off = int.from_bytes(data[0x248:0x24C], "little")
    length = int.from_bytes(data[0x24C:0x250], "little")
    start = (setup_sects + 1) * 512 + off
    payload = data[start : start + length]
    if len(payload) != length or not length:
        raise KernelError(f"{where}: payload {start:#x}+{length:#x} lies outside the file")
    for magic, fmt in _PAYLOAD_FORMATS:
        if payload.startswith(magic):
            return fmt, payload
    raise KernelError(f"{where}: unknown payload compression (magic {payload[:6].hex()})")


def _decompress(fmt: str, payload: bytes, where: str) -> bytes:
    if fmt == "none":
        return payload
    if fmt == "gzip":
        import zlib

        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    if fmt == "xz":
        return lzma.LZMADecompressor().decompress(payload)
    tool = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"]}[fmt]
    try:
        proc = subprocess.run(tool, input=payload, capture_output=True)
    except FileNotFoundError:
        raise KernelError(f"{where}: {tool[0]} is needed to unpack the kernel", hint=f"apt-get install {tool[0]}") from None
    # a bzImage payload may carry trailing bytes (the size word); the tools then warn but the ELF is whole
    if not proc.stdout.startswith(b"\x7fELF"):
        raise KernelError(f"{where}: {tool[0]} -d failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout


def extract_vmlinux(kernel: DebianKernel) -> Path:
    """Uncompress ``kernel.vmlinuz`` into an ELF (``vmlinux`` next to its cache entry), once.

    The ELF carries the kernel's PVH entry note (Debian: CONFIG_PVH=y), so QEMU
    boots it with ``-kernel`` on ``microvm`` directly, without the in-guest
    decompression (about a second under TCG).
    """
    out = (kernel.root or kernel.vmlinuz.parent) / "vmlinux"
    if out.exists():
        return out
    where = str(kernel.vmlinuz)
    fmt, payload = bzimage_payload(kernel.vmlinuz.read_bytes(), where)
    elf = _decompress(fmt, payload, where)
    if not elf.startswith(b"\x7fELF"):
        raise KernelError(f"{where}: the unpacked payload is not an ELF")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".vmlinux.")
    with os.fdopen(fd, "wb") as f:
        f.write(elf)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out
