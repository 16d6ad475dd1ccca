"""Import foreign CPUID dumps as host profiles.

Supported inputs:

* ``cpuid -r`` / ``cpuid -1 -r`` text -> profile with the raw layer only;
* libvirt cputestdata: ``x86_64-cpuid-NAME.xml`` (raw CPUID, MSRs), with the
  sibling ``-enabled.xml`` / ``-disabled.xml`` (what QEMU+KVM enabled for
  ``-cpu host``) and ``.json`` (QMP replies) when present.

Imported profiles have no kernel caps: the policy model derives them
(``assumed``) with the chosen kernel version's rules.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..cpuid.parse import parse_cpudata_msrs, parse_cpudata_xml, parse_cpuid_r, parse_feature_words
from ..cpuid.table import CpuidFormatError
from .profile import HostProfile, KernelInfo, ProfileError


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text file") from None


def detect_format(path: Path, text: str) -> str:
    head = text.lstrip()[:2000]
    if "<cpudata" in head:
        return "libvirt"
    if re.search(r"^\s*0x[0-9a-fA-F]{8}\s+0x[0-9a-fA-F]+:\s+eax=", text, re.M):
        return "cpuid-r"
    raise ProfileError(
        f"{path}: unrecognised dump format",
        hint="expected `cpuid -r` output or a libvirt x86_64-cpuid-*.xml file",
    )


def import_cpuid_r(path: Path, *, cpu: int = 0) -> HostProfile:
    text = _read(path)
    table = parse_cpuid_r(text, cpu=cpu, where=str(path))
    return HostProfile(
        raw=table,
        kernel=KernelInfo(),
        source="import:cpuid-r",
        name=path.stem,
        missing=["kernel caps (not in a cpuid dump; the policy model assumes them)",
                 "KVM supported CPUID", "KVM module parameters"],
        notes={"imported_from": str(path)},
    )


def _concatenated_json(text: str, where: str) -> list[dict]:
    dec = json.JSONDecoder()
    docs, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        try:
            doc, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ProfileError(f"{where}: malformed JSON document at line {e.lineno}: {e.msg}") from None
        docs.append(doc)


def import_libvirt(path: Path) -> HostProfile:
    text = _read(path)
    name = re.sub(r"^x86_64-cpuid-", "", path.stem)
    if name.endswith(("-enabled", "-disabled")):
        raise ProfileError(
            f"{path}: this is libvirt's {name.rsplit('-', 1)[1]} bits file, not a raw dump",
            hint=f"import {path.name.rsplit('-', 1)[0]}.xml instead",
        )
    raw = parse_cpudata_xml(text, where=str(path))
    m = re.match(r"\s*<!--\s*(.*?)\s*-->", text)
    notes: dict = {"imported_from": str(path)}
    msrs = parse_cpudata_msrs(text, where=str(path))
    if msrs:
        notes["msrs"] = {f"0x{k:x}": f"0x{v:x}" for k, v in sorted(msrs.items())}
    for kind in ("enabled", "disabled"):
        sib = path.with_name(f"{path.stem}-{kind}.xml")
        if sib.exists():
            notes[f"qemu_kvm_host_{kind}"] = parse_cpudata_xml(_read(sib), where=str(sib)).to_json()
    js = path.with_suffix(".json")
    if js.exists():
        docs = _concatenated_json(_read(js), str(js))
        qmp: dict = {}
        for i, d in enumerate(docs):
            if not isinstance(d, dict):
                raise ProfileError(f"{js}: QMP reply {i} is not a JSON object")
            ident = str(d.get("id", "?"))
            ret = d.get("return")
            if ident == "feature-words" and isinstance(ret, list):
                try:
                    notes["qemu_host_feature_words"] = parse_feature_words(ret, where=str(js)).to_json()
                except CpuidFormatError as e:
                    raise ProfileError(str(e)) from None
            else:
                qmp[ident] = ret
        notes["qmp"] = qmp
    return HostProfile(
        raw=raw,
        kernel=KernelInfo(),
        source="import:libvirt",
        name=name,
        model_name=m.group(1) if m else None,
        missing=["kernel caps (libvirt does not record them; the policy model assumes them)",
                 "KVM supported CPUID (only the -enabled bits QEMU+KVM showed for -cpu host)",
                 "KVM module parameters", "kernel version"],
        notes=notes,
    )


def import_dump(path: str | Path, *, fmt: str | None = None, cpu: int = 0) -> HostProfile:
    p = Path(path)
    fmt = fmt or detect_format(p, _read(p))
    if fmt == "cpuid-r":
        return import_cpuid_r(p, cpu=cpu)
    if fmt == "libvirt":
        return import_libvirt(p)
    raise ProfileError(f"unknown import format {fmt!r} (use cpuid-r or libvirt)")
