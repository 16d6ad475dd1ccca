"""Parsers that turn foreign CPUID dumps into :class:`CpuidTable`.

* ``cpuid -r`` / ``cpuid -1 -r`` text (the ``cpuid`` tool by Todd Allen);
* the ``struct kvm_cpuid2`` buffer filled by ``KVM_GET_SUPPORTED_CPUID``;
* QMP ``feature-words`` (a list of ``X86CPUFeatureWordInfo``);
* libvirt cputestdata ``<cpudata>`` XML.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from xml.etree import ElementTree

from .table import REGISTERS, CpuidFormatError, CpuidTable, Regs, u32

_CPUID_LINE = re.compile(
    r"^\s*(0x[0-9a-fA-F]+)\s+(0x[0-9a-fA-F]+):\s+eax=(0x[0-9a-fA-F]+)\s+ebx=(0x[0-9a-fA-F]+)"
    r"\s+ecx=(0x[0-9a-fA-F]+)\s+edx=(0x[0-9a-fA-F]+)\s*$"
)
_CPU_HEADER = re.compile(r"^\s*CPU(?:\s+(\d+))?:\s*$")


def parse_cpuid_r(text: str, *, cpu: int = 0, where: str = "cpuid -r dump") -> CpuidTable:
    """Parse ``cpuid -r`` output; with several CPUs, take ``cpu``.

    Raises :class:`CpuidFormatError` naming the line when a line looks like an
    entry but is malformed, or when no entry is found at all.
    """
    tables: dict[int, CpuidTable] = {}
    current = 0
    seen_header = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _CPU_HEADER.match(line)
        if m:
            current = int(m.group(1)) if m.group(1) is not None else 0
            seen_header = True
            continue
        m = _CPUID_LINE.match(line)
        if not m:
            if line.lstrip().startswith("0x"):
                raise CpuidFormatError(f"{where}: line {lineno}: malformed CPUID entry: {line.strip()!r}")
            # cpuid also prints other text (e.g. "(multi-processing ...)"); ignore
            continue
        leaf, subleaf, a, b, c, d = (u32(int(x, 16), f"{where}: line {lineno}") for x in m.groups())
        tables.setdefault(current, CpuidTable()).set(leaf, subleaf, Regs(a, b, c, d))
    if not tables:
        raise CpuidFormatError(f"{where}: no CPUID entries found (expected `cpuid -r` output)")
    if cpu not in tables:
        cpus = ", ".join(str(c) for c in sorted(tables))
        raise CpuidFormatError(f"{where}: no CPU {cpu} in dump (has CPU {cpus})")
    del seen_header
    return tables[cpu]


# struct kvm_cpuid_entry2 { __u32 function, index, flags, eax, ebx, ecx, edx; __u32 padding[3]; }
KVM_CPUID_ENTRY2 = struct.Struct("<10I")
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # (sic) the kernel's spelling


def parse_kvm_cpuid2(buf: bytes, nent: int | None = None) -> CpuidTable:
    """Parse a ``struct kvm_cpuid2`` buffer (``nent``, ``padding``, entries...).

    If ``nent`` is given, ``buf`` holds only the entries.  Entries are kept
    exactly; a leaf that KVM flags as significant-index is stored per subleaf.
    """
    if nent is None:
        if len(buf) < 8:
            raise CpuidFormatError("kvm_cpuid2 buffer shorter than its header")
        (nent,) = struct.unpack_from("<I", buf, 0)
        body = buf[8:]
    else:
        body = buf
    if len(body) < nent * KVM_CPUID_ENTRY2.size:
        raise CpuidFormatError(f"kvm_cpuid2 buffer holds fewer than {nent} entries")
    t = CpuidTable()
    for i in range(nent):
        fn, idx, flags, a, b, c, d, *_pad = KVM_CPUID_ENTRY2.unpack_from(body, i * KVM_CPUID_ENTRY2.size)
        subleaf = idx if flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX else 0
        # store under the index even when our SUBLEAF_LEAVES does not list it,
        # so that nothing the kernel said is lost
        t.entries[(fn, subleaf if (flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) else 0)] = Regs(a, b, c, d)
    return t


def kvm_cpuid2_entries(buf: bytes) -> list[tuple[int, int, int, int, int, int, int]]:
    """(function, index, flags, eax, ebx, ecx, edx) per entry, exactly as returned."""
    (nent,) = struct.unpack_from("<I", buf, 0)
    return [KVM_CPUID_ENTRY2.unpack_from(buf, 8 + i * KVM_CPUID_ENTRY2.size)[:7] for i in range(nent)]


def parse_feature_words(words: Iterable[Mapping], where: str = "feature-words") -> CpuidTable:
    """QMP ``feature-words`` -> a partial table (only the listed registers known).

    Each item: ``{"cpuid-input-eax": N, "cpuid-input-ecx"?: N,
    "cpuid-register": "EAX"|..., "features": N}``.  Words of the same register
    (QEMU has none today, but be safe) are OR-ed.
    """
    t = CpuidTable()
    for i, w in enumerate(words):
        try:
            leaf = int(w["cpuid-input-eax"])
            subleaf = int(w.get("cpuid-input-ecx", 0))
            reg = str(w["cpuid-register"]).lower()
            value = int(w["features"])
        except (KeyError, TypeError, ValueError) as e:
            raise CpuidFormatError(f"{where}: item {i} malformed ({e})") from None
        if reg not in REGISTERS:
            raise CpuidFormatError(f"{where}: item {i} has register {reg!r}")
        old = t.reg(leaf, subleaf, reg) or 0
        t.set_reg(leaf, subleaf, reg, old | value)
    return t


def parse_cpudata_xml(text: str, where: str = "cpudata XML") -> CpuidTable:
    """libvirt ``<cpudata arch='x86'>`` (cputestdata) -> table; MSRs ignored."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise CpuidFormatError(f"{where}: not XML: {e}") from None
    if root.tag != "cpudata":
        raise CpuidFormatError(f"{where}: root element is <{root.tag}>, expected <cpudata>")
    t = CpuidTable()
    for i, el in enumerate(root.iter("cpuid")):
        try:
            leaf = _hex32(el.attrib["eax_in"])
            subleaf = _hex32(el.attrib.get("ecx_in", "0"))
            vals = {r: _hex32(el.attrib[r]) for r in REGISTERS}
        except KeyError as e:
            raise CpuidFormatError(f"{where}: <cpuid> element {i} has no {e.args[0]!r} attribute") from None
        except ValueError as e:
            raise CpuidFormatError(f"{where}: <cpuid> element {i} malformed ({e})") from None
        t.set(leaf, subleaf, Regs(**vals))
    if not t:
        raise CpuidFormatError(f"{where}: no <cpuid> elements")
    return t


def _hex32(text: str) -> int:
    """A libvirt hex attribute (``0x0000000d``): unsigned, at most 32 bits; ValueError otherwise."""
    if not re.fullmatch(r"(0[xX])?[0-9a-fA-F]+", text.strip()):
        raise ValueError(f"{text!r} is not a hexadecimal number")
    v = int(text, 16)
    if v > 0xFFFFFFFF:
        raise ValueError(f"{text} does not fit 32 bits")
    return v


def parse_cpudata_msrs(text: str, where: str = "cpudata XML") -> dict[int, int]:
    """MSR values in a libvirt ``<cpudata>`` file (index -> 64-bit value)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise CpuidFormatError(f"{where}: not XML: {e}") from None
    out = {}
    for i, el in enumerate(root.iter("msr")):
        try:
            out[_hex32(el.attrib["index"])] = (_hex32(el.attrib["edx"]) << 32) | _hex32(el.attrib["eax"])
        except KeyError as e:
            raise CpuidFormatError(f"{where}: <msr> element {i} has no {e.args[0]!r} attribute") from None
        except ValueError as e:
            raise CpuidFormatError(f"{where}: <msr> element {i} malformed ({e})") from None
    return out
