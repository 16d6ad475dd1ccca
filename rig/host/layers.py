"""Selecting one layer of a profile, or reading a table from any supported file.

A *table reference* is ``PATH`` or ``PATH:LAYER``.  For a host profile the
layers are ``raw`` (default), ``supported`` (alias ``kvm-supported``) and
``emulated`` (alias ``kvm-emulated``); other files (a CPUID table JSON, ``cpuid
-r`` text, libvirt cpudata XML) have one table and take no layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..cpuid.parse import parse_cpudata_xml, parse_cpuid_r
from ..cpuid.table import CpuidTable
from .profile import FORMAT as PROFILE_FORMAT
from .profile import HostProfile, ProfileError

LAYER_ALIASES = {
    "raw": "raw",
    "supported": "supported",
    "kvm-supported": "supported",
    "kvm_supported": "supported",
    "emulated": "emulated",
    "kvm-emulated": "emulated",
}


@dataclass(frozen=True)
class TableRef:
    path: Path
    layer: str | None

    def __str__(self) -> str:
        return f"{self.path}:{self.layer}" if self.layer else str(self.path)


def parse_ref(text: str) -> TableRef:
    path, sep, layer = text.rpartition(":")
    if sep and layer in LAYER_ALIASES and path:
        return TableRef(Path(path), LAYER_ALIASES[layer])
    if sep and path and not Path(text).exists() and "/" not in layer:
        raise ProfileError(
            f"{text}: unknown layer {layer!r}", hint=f"layers: {', '.join(sorted(set(LAYER_ALIASES.values())))}"
        )
    return TableRef(Path(text), None)


def profile_layer(profile: HostProfile, layer: str, where: str) -> CpuidTable:
    if layer == "raw":
        if not profile.raw:
            raise ProfileError(f"{where}: profile has no raw CPUID")
        return profile.raw
    table = profile.kvm.supported if layer == "supported" else profile.kvm.emulated
    if table is None:
        why = profile.kvm.error or "not recorded"
        raise ProfileError(f"{where}: profile has no KVM {layer} CPUID ({why})")
    return table


def load_table(ref: TableRef) -> CpuidTable:
    p = ref.path
    try:
        text = p.read_text()
    except OSError as e:
        raise ProfileError(f"{p}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{p}: not a text file") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProfileError(f"{p}: not JSON: {e.msg} at line {e.lineno}") from None
        if isinstance(data, dict) and data.get("format") == PROFILE_FORMAT:
            prof = HostProfile.from_json(data, str(p))
            return profile_layer(prof, ref.layer or "raw", str(ref))
        if ref.layer:
            raise ProfileError(f"{p}: a plain CPUID table has no layer {ref.layer!r}")
        return CpuidTable.from_json(data, str(p))
    if ref.layer:
        raise ProfileError(f"{p}: only host profiles have layers")
    if stripped.startswith("<"):
        return parse_cpudata_xml(text, where=str(p))
    return parse_cpuid_r(text, where=str(p))
