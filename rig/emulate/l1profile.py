"""The ``profile`` section kvmcap prints inside L1 -> :class:`HostProfile`.

Same format as ``rig host capture`` (rig/host/profile.py), ``source =
"emulated"``; ``notes`` record the emulated host (QEMU -cpu model, kernel,
module parameters requested).  Line grammar: guests/l1/kvmcap.c.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Iterable

from ..cpuid.parse import KVM_CPUID_ENTRY2, parse_kvm_cpuid2
from ..cpuid.table import CpuidTable
from ..host.kvm import vendor_module
from ..host.profile import HostProfile, KernelInfo, KvmInfo, KvmModule
from .frames import FrameError


def _entries_table(entries: list[list[int]]) -> CpuidTable:
    """Build the table exactly as rig.host.kvm does from the ioctl buffer."""
    body = b"".join(KVM_CPUID_ENTRY2.pack(*e, 0, 0, 0) for e in entries)
    return parse_kvm_cpuid2(struct.pack("<II", len(entries), 0) + body)


def parse_profile(lines: Iterable[str], *, name: str | None = None) -> HostProfile:
    """Parse the payload of kvmcap's ``profile`` section."""
    raw_items: list[tuple[int, int, int, int, int, int]] = []
    sup: list[list[int]] = []
    emu: list[list[int]] = []
    kernel = KernelInfo()
    params: dict[str, dict[str, str]] = {}
    modules: list[str] = []
    api: int | None = None
    errors: dict[str, str] = {}
    model_name = None
    for n, line in enumerate(lines, 1):
        tag, _, rest = line.partition(" ")
        try:
            if tag == "raw":
                leaf, sub, a, b, c, d = (int(x, 16) for x in rest.split())
                raw_items.append((leaf, sub, a, b, c, d))
            elif tag in ("sup", "emu"):
                vals = [int(x, 16) for x in rest.split()]
                if len(vals) != 7:
                    raise ValueError("expected 7 fields")
                (sup if tag == "sup" else emu).append(vals)
            elif tag == "release":
                kernel.release = rest
            elif tag == "cmdline":
                kernel.cmdline = rest
            elif tag == "flags":
                kernel.flags = rest.split()
            elif tag == "bugs":
                kernel.bugs = rest.split()
            elif tag == "model_name":
                model_name = rest
            elif tag == "module":
                modules.append(rest.strip())
                params.setdefault(rest.strip(), {})
            elif tag == "param":
                mod, pname, value = rest.split(" ", 2)
                params.setdefault(mod, {})[pname] = value
            elif tag == "api":
                api = int(rest)
            elif tag.endswith("-error"):
                errors[tag.removesuffix("-error")] = rest
            else:
                raise ValueError(f"unknown tag {tag!r}")
        except ValueError as e:
            raise FrameError(f"L1 profile section, line {n}: {line!r}: {e}") from None
    missing = []
    kvm = KvmInfo(
        device="/dev/kvm (in L1)",
        api_version=api,
        vendor_module=vendor_module(params),
        modules=[KvmModule(m, params[m]) for m in sorted(params, key=lambda m: (m not in modules, m))],
    )
    if "api" in errors:
        kvm.error = f"/dev/kvm in L1: {errors['api']}"
        missing.append(f"KVM supported/emulated CPUID: {kvm.error}")
    if sup:
        kvm.supported = _entries_table(sup)
        kvm.supported_entries = sup
    elif "sup" in errors:
        kvm.error = f"KVM_GET_SUPPORTED_CPUID in L1 failed: {errors['sup']}"
        missing.append(kvm.error)
    if emu:
        kvm.emulated = _entries_table(emu)
        kvm.emulated_entries = emu
    elif "emu" in errors:
        missing.append(f"KVM_GET_EMULATED_CPUID in L1: {errors['emu']}")
    if "cpuinfo" in errors:
        missing.append(f"kernel caps: /proc/cpuinfo in L1: {errors['cpuinfo']}")
    if not raw_items:
        missing.append("raw CPUID: no raw lines in the L1 profile section")
    return HostProfile(
        raw=CpuidTable.from_items(raw_items),
        kernel=kernel,
        kvm=kvm,
        qemu=[],
        source="emulated",
        name=name,
        hostname=None,
        captured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        model_name=model_name,
        missing=missing,
    )
