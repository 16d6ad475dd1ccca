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
        archive = archive or DebianArchive.default()
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
                          hint="see `apt-cache madison` output of the rig's archive; series that exist: 6.1, 6.12, 7.x")
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


#: the Debian series the committed policies are imported from
POLICY_SERIES: tuple[str, ...] = ("6.1", "6.12", "7.3")
