"""Execute the CPUID instruction on this host from Python.

A tiny x86-64 function is placed in an executable anonymous mapping and called
through ctypes (the technique avocado-vt uses).  Linux pins nothing: the
calling thread may migrate between CPUs, which only matters for per-CPU fields
(APIC IDs), and those are volatile by definition.

Machine code (System V ABI: edi=leaf, esi=subleaf, rdx=out pointer)::

    push rbx            ; rbx is callee-saved and CPUID clobbers it
    mov  r8, rdx        ; CPUID clobbers rdx
    mov  eax, edi
    mov  ecx, esi
    cpuid
    mov  [r8], eax
    mov  [r8+4], ebx
    mov  [r8+8], ecx
    mov  [r8+12], edx
    pop  rbx
    ret
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from dataclasses import dataclass

from ..cpuid.table import Regs
from ..errors import RigError

_CODE = bytes.fromhex(
    "53"          # push rbx
    "4989d0"      # mov r8, rdx
    "89f8"        # mov eax, edi
    "89f1"        # mov ecx, esi
    "0fa2"        # cpuid
    "418900"      # mov [r8], eax
    "41895804"    # mov [r8+4], ebx
    "41894808"    # mov [r8+8], ecx
    "4189500c"    # mov [r8+12], edx
    "5b"          # pop rbx
    "c3"          # ret
)


class CpuidUnavailable(RigError):
    pass


@dataclass
class CpuidExecutor:
    """Callable ``(leaf, subleaf) -> Regs`` executing CPUID on the host."""

    _mem: mmap.mmap
    _fn: ctypes._CFuncPtr  # type: ignore[name-defined]

    @classmethod
    def open(cls) -> CpuidExecutor:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise CpuidUnavailable(f"cannot execute CPUID on {platform.machine()}: x86-64 hosts only")
        try:
            mem = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        except (OSError, PermissionError) as e:
            raise CpuidUnavailable(f"cannot map executable memory for CPUID ({e}); use `cpuid -r` and `rig host import`") from None
        mem.write(_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        proto = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))
        return cls(mem, proto(addr))

    def __call__(self, leaf: int, subleaf: int = 0) -> Regs:
        out = (ctypes.c_uint32 * 4)()
        self._fn(leaf, subleaf, out)
        return Regs(out[0], out[1], out[2], out[3])
