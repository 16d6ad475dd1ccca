"""Kernel source trees for the policy importer: the few files it reads, cached.

``fetch_source("6.12")`` picks the newest ``linux-source-6.12`` package of the
rig's private apt lists (:class:`rig.images.debian.DebianArchive`), downloads
it, and streams only :data:`FILES` out of the source tarball it contains
(``dpkg-deb --fsys-tarfile | tar -xO ...tar.xz | xz -dc | tar -x``; a few
seconds instead of unpacking 1.5 GB).  The result is a content-addressed cache
entry ``<cache>/kernel-source/<digest>/`` (digest of package name and version)
holding ``tree/`` (the partial kernel tree) and ``source.json``.  A second call
finds the entry; without network, a cached tree of the requested series is used.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError
from ..images import cache
from ..images.debian import DebianArchive, DebianError

KIND = "kernel-source"

#: what the importer (and a reader checking a rule) needs; tar wildcards under linux-source-X/
FILES: tuple[str, ...] = (
    "Makefile",
    "arch/x86/kvm/cpuid.c",
    "arch/x86/kvm/cpuid.h",
    "arch/x86/kvm/reverse_cpuid.h",
    "arch/x86/kvm/x86.c",
    "arch/x86/kvm/x86.h",
    "arch/x86/kvm/pmu.c",
    "arch/x86/kvm/pmu.h",
    "arch/x86/kvm/svm/svm.c",
    "arch/x86/kvm/svm/svm.h",
    "arch/x86/kvm/svm/sev.c",
    "arch/x86/kvm/svm/pmu.c",
    "arch/x86/kvm/vmx/vmx.c",
    "arch/x86/kvm/vmx/capabilities.h",
    "arch/x86/kvm/vmx/pmu_intel.c",
    "arch/x86/kvm/mmu/mmu.c",
    "arch/x86/include/asm/cpufeatures.h",
    "arch/x86/include/asm/cpufeature.h",
    "arch/x86/include/asm/kvm_host.h",
    "arch/x86/kernel/fpu/xstate.c",
    "arch/x86/kernel/cpu/intel.c",
    "arch/x86/include/asm/fpu/xstate.h",
    "arch/x86/include/uapi/asm/kvm_para.h",
    "arch/x86/kernel/cpu/scattered.c",
    "arch/x86/kernel/cpu/amd.c",
    "arch/x86/kernel/cpu/common.c",
    "arch/x86/kernel/cpu/bugs.c",
    "arch/x86/kernel/cpu/mkcapflags.sh",
    "tools/arch/x86/kcpuid/cpuid.csv",
)


class SourceError(RigError):
    pass


@dataclass(frozen=True)
class KernelSource:
    series: str  # "6.12"
    package: str  # "linux-source-6.12"
    package_version: str  # "6.12.117-1"
    suite: str
    tree: Path  # partial kernel tree (paths as in the kernel)

    @property
    def kernel_version(self) -> str:
        """``VERSION.PATCHLEVEL.SUBLEVEL`` from the tree's Makefile."""
        return makefile_version(self.tree) or self.package_version.split("-")[0]


def makefile_version(tree: Path) -> str | None:
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except OSError:
        return None
    vals = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d+)", text, re.M)
        if not m:
            return None
        vals[key] = m.group(1)
    return f"{vals['VERSION']}.{vals['PATCHLEVEL']}.{vals['SUBLEVEL']}"


def _meta(entry: Path) -> KernelSource:
    d = json.loads((entry / "source.json").read_text())
    return KernelSource(d["series"], d["package"], d["package_version"], d["suite"], entry / "tree")


def cached_sources() -> list[KernelSource]:
    base = cache.cache_root() / KIND
    out = []
    for e in sorted(base.glob("*")) if base.is_dir() else []:
        if cache.is_complete(e) and (e / "source.json").exists():
            try:
                out.append(_meta(e))
            except (OSError, ValueError, KeyError):
                continue
    return out


def _stream_extract(deb: Path, series: str, into: Path) -> None:
    """Stream FILES out of the .deb's ``usr/src/linux-source-X.tar.xz``."""
    inner = f"./usr/src/linux-source-{series}.tar.xz"
    prefix = f"linux-source-{series}/"
    into.mkdir(parents=True, exist_ok=True)
    members = [prefix + f for f in FILES]
    script = (
        'dpkg-deb --fsys-tarfile "$1" | tar -xOf - "$2" | xz -dc -T0 | '
        'tar -xf - -C "$3" --strip-components=1 --ignore-failed-read "${@:4}" 2>&1 || true'
    )
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + script, "x", str(deb), inner, str(into), *members],
                          capture_output=True, text=True, timeout=900)
    if not (into / "arch/x86/kvm/cpuid.c").exists():
        msg = (proc.stdout + proc.stderr).strip().splitlines()
        raise SourceError(f"{deb.name}: could not stream the KVM files out of {inner}: "
                          f"{msg[-1] if msg else 'no output'}")


#: series whose linux-source package is only in a suite the rig's main apt configuration does not list
OLD_SUITES: dict[str, str] = {"5.10": "bullseye"}


def archive_for(series: str) -> DebianArchive:
    """The rig's main private apt configuration, or for :data:`OLD_SUITES` one of its own (same archive URI)."""
    suite = OLD_SUITES.get(series)
    if suite is None:
        return DebianArchive.default()
    from ..images.debian import _debian_uri

    return DebianArchive(cache.cache_root() / f"apt-{suite}", _debian_uri(), (suite,))


def fetch_source(series: str, archive: DebianArchive | None = None, *, version: str | None = None) -> KernelSource:
    """The partial tree of Debian's ``linux-source-SERIES`` (newest, or ``version``), cached."""
    if not re.fullmatch(r"\d+\.\d+", series):
        raise SourceError(f"kernel series {series!r} not understood (expected e.g. 6.1, 6.12, 7.3)")
    package = f"linux-source-{series}"
    if version is not None:
        for s in cached_sources():
            if s.series == series and s.package_version == version:
                return s
    try:
        archive = archive or archive_for(series)
        vs = archive.versions(package)
    except DebianError as e:
        for s in cached_sources():
            if s.series == series and (version is None or s.package_version == version):
                return s
        raise SourceError(f"cannot look up {package}: {e}", hint="network to the Debian archive is needed once") from e
    if version is not None:
        vs = [v for v in vs if v.version == version]
    if not vs:
        raise SourceError(f"no {package}{'=' + version if version else ''} in the configured Debian suites",
                          hint="series with a linux-source package: 5.10 (bullseye), 6.1, 6.12, 7.x; for 6.17-6.19 the rig imports "
                          "the Debian source package (`rig policy get 6.18`)")
    pv = vs[0]
    key = cache.digest([KIND, package, pv.version, *FILES])
    entry = cache.entry_dir(KIND, key)
    if cache.is_complete(entry):
        return _meta(entry)
    with cache.building(KIND, key) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as dl:
        deb = archive.download(package, dest=Path(dl), version=pv.version)
        _stream_extract(deb, series, tmp / "tree")
        (tmp / "source.json").write_text(json.dumps({
            "series": series, "package": package, "package_version": pv.version, "suite": pv.suite,
            "files": list(FILES),
        }, indent=1) + "\n")
        deb.unlink()
    shutil.rmtree(Path(dl), ignore_errors=True)
    return _meta(entry)


#: suites whose Sources index the rig reads for series without a linux-source package
SOURCE_SUITES: tuple[str, ...] = ("trixie-backports",)


def source_archive() -> DebianArchive:
    """The rig's private ``deb-src`` configuration (same archive URI as the machine's apt sources)."""
    from ..images.debian import _debian_uri

    return DebianArchive(cache.cache_root() / "apt-src", _debian_uri(), SOURCE_SUITES, kind="deb-src")


#: what the Debian patch check looks at: the importer's files except the top Makefile, which Debian's
#: version.patch edits for its version string (the importer reads only VERSION/PATCHLEVEL/SUBLEVEL there)
PATCH_CHECKED: tuple[str, ...] = tuple(f for f in FILES if f != "Makefile")


def patches_touching(debian_tar: Path, files: tuple[str, ...] = PATCH_CHECKED) -> tuple[list[str], int]:
    """(patches of ``debian/patches/series`` that modify one of ``files``, number of patches in the series)."""
    with tempfile.TemporaryDirectory() as td:
        proc = subprocess.run(["tar", "-xf", str(debian_tar), "-C", td, "debian/patches"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SourceError(f"{debian_tar.name}: no debian/patches: {proc.stderr.strip()}")
        base = Path(td) / "debian/patches"
        series = [ln.split()[0] for ln in (base / "series").read_text().splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
        wanted = set(files)
        hits = []
        for name in series:
            text = (base / name).read_text(errors="replace")
            targets = {t.split("/", 1)[1] for t in re.findall(r"^\+\+\+ (\S+)", text, re.M) if "/" in t}
            if targets & wanted:
                hits.append(name)
        return hits, len(series)


#: version of the Debian patch check recorded in a cached source-package tree (a new check rebuilds the entry)
PATCH_CHECK = "patch-check-2"


def _neighbour_patch_check(archive: DebianArchive, version: str, deb: str | None, dl: Path) -> str:
    """When a version's own debian tarball is not served: the patch check on every one the archive does serve
    (``apt-get source --diff-only`` of each listed version of ``linux``); the text recorded in the policy."""
    served = []
    for v in archive.versions("linux"):
        if v.version == version:
            continue
        got = archive.source_files("linux", v.version, dest=dl / "diffs", diff_only=True)
        for name, (_sha, path) in got.items():
            if path is not None and name.endswith(".debian.tar.xz"):
                hits, n = patches_touching(path)
                served.append(f"{v.version} ({n} patches{': ' + ', '.join(hits) if hits else ''})")
                if hits:
                    raise SourceError(f"linux {v.version}: Debian patches modify files the importer reads: "
                                      f"{', '.join(hits)}", hint="the orig tarball may differ from what Debian built")
    own = f"not checked directly: the archive did not serve {deb or 'its debian tarball'}"
    if not served:
        return f"{own}, nor any other debian tarball of linux; the files are the upstream ones of the orig tarball"
    return (f"{own}; the debian tarballs it serves, of linux {', '.join(served)}, modify none of the imported files "
            "(top Makefile not checked: version string only)")


def fetch_source_package(version: str, archive: DebianArchive | None = None) -> KernelSource:
    """The importer's files from Debian's *source* package ``linux`` whose upstream version is ``version``.

    For series with no ``linux-source-X`` binary package (6.16-6.18 in
    trixie-backports).  ``apt-get source --download-only`` fetches what the
    archive serves; the upstream (``.orig``) tarball must be there (its SHA256
    is checked against the signed Sources index).  When Debian's
    ``debian.tar.xz`` is served too, the import refuses a tree that any Debian
    patch in ``debian/patches/series`` modifies in :data:`FILES` (then the orig
    tarball would not be what Debian built); when it is not served, the
    provenance says the patches could not be checked.
    """
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SourceError(f"kernel version {version!r} not understood (expected e.g. 6.18.15)")
    series = ".".join(version.split(".")[:2])
    for s in cached_sources():
        if s.package == "linux" and s.package_version.split("-")[0] == version and \
                json.loads((s.tree.parent / "source.json").read_text()).get("check") == PATCH_CHECK:
            return s
    try:
        archive = archive or source_archive()
        vs = [v for v in archive.versions("linux") if v.version.split("-")[0] == version]
    except DebianError as e:
        raise SourceError(f"cannot look up Debian source package linux={version}: {e}",
                          hint="network to the Debian archive is needed once") from e
    if not vs:
        raise SourceError(f"no Debian source package linux={version}-* in {', '.join(archive.suites)}",
                          hint="`apt-cache madison linux` with the rig's deb-src configuration lists what exists")
    pv = vs[0]
    key = cache.digest([KIND, "linux-src", PATCH_CHECK, pv.version, *FILES])
    entry = cache.entry_dir(KIND, key)
    if cache.is_complete(entry):
        return _meta(entry)
    with cache.building(KIND, key) as tmp, tempfile.TemporaryDirectory(dir=tmp.parent) as dl:
        got = archive.source_files("linux", pv.version, dest=Path(dl))
        orig = next((n for n in got if re.fullmatch(rf"linux_{re.escape(version)}\.orig\.tar\.\w+", n)), None)
        if orig is None or got[orig][1] is None:
            raise SourceError(f"the archive did not serve linux_{version}.orig.tar.* of linux {pv.version}",
                              hint="this mirror lacks the upstream tarball; the policy cannot be imported from it")
        deb = next((n for n in got if n.endswith(".debian.tar.xz")), None)
        checked: dict[str, object]
        if deb and got[deb][1] is not None:
            hits, n = patches_touching(got[deb][1])  # type: ignore[arg-type]
            if hits:
                raise SourceError(f"linux {pv.version}: Debian patches modify files the importer reads: "
                                  f"{', '.join(hits)}", hint="use a linux-source package (patches applied) instead")
            checked = {"debian_tar": deb, "debian_tar_sha256": got[deb][0],
                       "debian_patches": f"none of the {n} patches in debian/patches/series modifies an imported file "
                       "(top Makefile not checked: version string only)"}
        else:
            checked = {"debian_tar": deb, "debian_patches": _neighbour_patch_check(archive, pv.version, deb, Path(dl))}
        prefix = f"linux-{version}/"
        into = tmp / "tree"
        into.mkdir(parents=True)
        proc = subprocess.run(["tar", "-xf", str(got[orig][1]), "-C", str(into), "--strip-components=1",
                               "--ignore-failed-read", *(prefix + f for f in FILES)], capture_output=True, text=True)
        if not (into / "arch/x86/kvm/cpuid.c").exists():
            raise SourceError(f"{orig}: could not extract the KVM files: {proc.stderr.strip()[-300:]}")
        (tmp / "source.json").write_text(json.dumps({
            "series": series, "package": "linux", "package_version": pv.version, "suite": pv.suite,
            "files": list(FILES), "kind": "Debian source package (apt-get source --download-only)",
            "orig": orig, "orig_sha256": got[orig][0], **checked, "check": PATCH_CHECK,
        }, indent=1) + "\n")
    return _meta(entry)


#: the Debian series the committed policies are imported from (linux-source-SERIES binary packages)
POLICY_SERIES: tuple[str, ...] = ("5.10", "6.1", "6.12", "7.2", "7.3")
#: series imported from Debian source packages (no linux-source binary package): series -> upstream version
SOURCE_PACKAGE_SERIES: dict[str, str] = {"6.17": "6.17.8", "6.18": "6.18.15", "6.19": "6.19.11"}
