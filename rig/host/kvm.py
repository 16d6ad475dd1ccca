"""Reading KVM's CPUID answers and module parameters on this host.

``KVM_GET_SUPPORTED_CPUID`` and ``KVM_GET_EMULATED_CPUID`` are system ioctls
on ``/dev/kvm`` taking a ``struct kvm_cpuid2`` (``__u32 nent; __u32 padding;
struct kvm_cpuid_entry2 entries[]``).  With too small an ``nent`` the kernel
fails with E2BIG, so the buffer is grown until it fits.  The entries are kept
exactly as returned (see :func:`rig.cpuid.parse.parse_kvm_cpuid2`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..cpuid.parse import KVM_CPUID_ENTRY2, parse_kvm_cpuid2
from ..cpuid.table import CpuidTable
from ..errors import RigError

# include/uapi/linux/kvm.h: KVMIO = 0xAE
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_GET_SUPPORTED_CPUID = 0xC008AE05  # _IOWR(KVMIO, 0x05, struct kvm_cpuid2)
KVM_GET_EMULATED_CPUID = 0xC008AE09  # _IOWR(KVMIO, 0x09, struct kvm_cpuid2)

MAX_ENTRIES = 4096

#: module names whose parameters describe KVM's policy
KVM_MODULES = ("kvm", "kvm_amd", "kvm_intel")


class KvmError(RigError):
    pass


@dataclass
class KvmCpuid:
    api_version: int
    supported: CpuidTable
    emulated: CpuidTable | None
    #: the raw ioctl answers (nent + entries bytes), for exact records
    supported_raw: bytes
    emulated_raw: bytes | None


def _get_cpuid(fd: int, request: int) -> bytes:
    nent = 64
    while nent <= MAX_ENTRIES:
        buf = bytearray(struct.pack("<II", nent, 0) + bytes(nent * KVM_CPUID_ENTRY2.size))
        try:
            fcntl.ioctl(fd, request, buf, True)
        except OSError as e:
            if e.errno == errno.E2BIG:
                nent *= 2
                continue
            raise
        (got,) = struct.unpack_from("<I", buf, 0)
        return bytes(buf[: 8 + got * KVM_CPUID_ENTRY2.size])
    raise KvmError(f"KVM returned more than {MAX_ENTRIES} CPUID entries")


def read_kvm_cpuid(device: str = "/dev/kvm") -> KvmCpuid:
    """Open ``device`` and ask for the supported and emulated CPUID."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        hint = "run as root or add yourself to the kvm group" if e.errno == errno.EACCES else None
        raise KvmError(f"{device}: cannot open: {e.strerror}", hint=hint) from None
    try:
        api = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        try:
            sup = _get_cpuid(fd, KVM_GET_SUPPORTED_CPUID)
        except OSError as e:
            raise KvmError(f"{device}: KVM_GET_SUPPORTED_CPUID failed: {e.strerror}") from None
        try:
            emu: bytes | None = _get_cpuid(fd, KVM_GET_EMULATED_CPUID)
        except OSError:
            emu = None  # older kernels / some hosts lack it; the caller records that
    finally:
        os.close(fd)
    return KvmCpuid(
        api_version=api,
        supported=parse_kvm_cpuid2(sup),
        emulated=parse_kvm_cpuid2(emu) if emu is not None else None,
        supported_raw=sup,
        emulated_raw=emu,
    )


def module_params(sys_module: Path = Path("/sys/module")) -> dict[str, dict[str, str]]:
    """Parameters of the loaded KVM modules (and any other module named kvm*)."""
    out: dict[str, dict[str, str]] = {}
    if not sys_module.is_dir():
        return out
    for mod in sorted(sys_module.iterdir()):
        if not (mod.name in KVM_MODULES or mod.name.startswith("kvm")):
            continue
        params: dict[str, str] = {}
        pdir = mod / "parameters"
        if pdir.is_dir():
            for p in sorted(pdir.iterdir()):
                try:
                    params[p.name] = p.read_text().strip()
                except OSError as e:
                    params[p.name] = f"<unreadable: {e.strerror}>"
        out[mod.name] = params
    return out


def vendor_module(params: dict[str, dict[str, str]]) -> str | None:
    for name in ("kvm_amd", "kvm_intel"):
        if name in params:
            return name
    return None
