"""Capture this machine's host profile: every layer the rig can observe natively.

Each part is captured independently; a part that fails is recorded in
``profile.missing`` with the reason (e.g. "/dev/kvm: cannot open: Permission
denied"), so a partial profile is still useful and says what it lacks.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..cpuid.enumeration import enumerate_cpuid
from ..cpuid.parse import kvm_cpuid2_entries
from ..cpuid.table import CpuidTable
from .cpuid_exec import CpuidExecutor, CpuidUnavailable
from .kvm import KvmError, module_params, read_kvm_cpuid, vendor_module
from .profile import HostProfile, KernelInfo, KvmInfo, KvmModule, QemuBinary

QEMU_NAMES = ("qemu-system-x86_64", "qemu-kvm")
QEMU_EXTRA_PATHS = ("/usr/libexec/qemu-kvm",)


def parse_cpuinfo(text: str) -> dict[str, str]:
    """Fields of the first processor block of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def read_kernel_info(proc: Path = Path("/proc")) -> tuple[KernelInfo, dict[str, str]]:
    text = (proc / "cpuinfo").read_text()
    f = parse_cpuinfo(text)
    try:
        cmdline = (proc / "cmdline").read_text().strip()
    except OSError:
        cmdline = None
    info = KernelInfo(
        release=os.uname().release,
        flags=f.get("flags", "").split(),
        bugs=f.get("bugs", "").split(),
        cmdline=cmdline,
    )
    return info, f


def qemu_version(binary: str, timeout: float = 10) -> tuple[str | None, str | None]:
    """(version, error) from ``binary --version``."""
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{binary} --version: {e}"
    m = re.search(r"version\s+(\S+)", proc.stdout)
    if proc.returncode != 0 or not m:
        return None, f"{binary} --version exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}"
    return m.group(1).rstrip(","), None


def find_qemu_binaries(extra: list[str] | None = None) -> list[QemuBinary]:
    seen: set[str] = set()
    out: list[QemuBinary] = []
    candidates = [shutil.which(n) for n in QEMU_NAMES] + list(QEMU_EXTRA_PATHS) + list(extra or [])
    for c in candidates:
        if not c or not os.access(c, os.X_OK):
            continue
        real = os.path.realpath(c)
        if real in seen:
            continue
        seen.add(real)
        version, error = qemu_version(c)
        out.append(QemuBinary(path=c, version=version, error=error))
    return out


def capture_profile(
    *,
    kvm_device: str = "/dev/kvm",
    proc: Path = Path("/proc"),
    sys_module: Path = Path("/sys/module"),
    qemu_extra: list[str] | None = None,
    cpuid: Callable | None = None,
    name: str | None = None,
) -> HostProfile:
    """Capture the profile of this host.  Never raises for a missing part."""
    missing: list[str] = []

    raw = CpuidTable()
    try:
        fn = cpuid or CpuidExecutor.open()
        raw = enumerate_cpuid(fn)
    except CpuidUnavailable as e:
        missing.append(f"raw CPUID: {e}")

    cpuinfo: dict[str, str] = {}
    try:
        kernel, cpuinfo = read_kernel_info(proc)
    except OSError as e:
        kernel = KernelInfo(release=os.uname().release)
        missing.append(f"kernel caps: cannot read {proc}/cpuinfo: {e.strerror}")

    params = module_params(sys_module)
    kvm = KvmInfo(
        device=kvm_device,
        vendor_module=vendor_module(params),
        modules=[KvmModule(n, p) for n, p in params.items()],
    )
    try:
        k = read_kvm_cpuid(kvm_device)
        kvm.api_version = k.api_version
        kvm.supported = k.supported
        kvm.emulated = k.emulated
        kvm.supported_entries = [list(e) for e in kvm_cpuid2_entries(k.supported_raw)]
        if k.emulated_raw is not None:
            kvm.emulated_entries = [list(e) for e in kvm_cpuid2_entries(k.emulated_raw)]
        if k.emulated is None:
            missing.append(f"KVM_GET_EMULATED_CPUID: not answered by {kvm_device}")
    except KvmError as e:
        kvm.error = str(e)
        missing.append(f"KVM supported/emulated CPUID: {e}")
    if not params:
        missing.append("KVM module parameters: no kvm module in /sys/module")

    qemu = find_qemu_binaries(qemu_extra)
    if not qemu:
        missing.append("QEMU: no qemu-system-x86_64 on PATH (install qemu-system-x86)")

    return HostProfile(
        raw=raw,
        kernel=kernel,
        kvm=kvm,
        qemu=qemu,
        source="capture",
        name=name or socket.gethostname(),
        hostname=socket.gethostname(),
        captured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        microcode=cpuinfo.get("microcode"),
        model_name=cpuinfo.get("model name"),
        missing=missing,
    )
