"""Host profiles: everything the models need to know about one host, as JSON.

A profile is the input of the KVM policy model and the record of what a host
really did.  Layers (see design.md §2):

* ``raw``            -- the host's CPUID instruction results (:class:`CpuidTable`);
* ``kernel``         -- the host kernel's capabilities: /proc/cpuinfo flags and
                        bugs (kept verbatim; unknown names are kept, not dropped),
                        its release, and whether the caps were ``assumed``
                        (derived by the rig) rather than read;
* ``kvm``            -- the vendor module, module parameters, and the measured
                        ``KVM_GET_SUPPORTED_CPUID`` / ``KVM_GET_EMULATED_CPUID``;
* ``qemu``           -- QEMU binaries found and their versions.

``missing`` lists what a partial capture could not record, in words.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cpuid.table import CpuidFormatError, CpuidTable
from ..errors import RigError
from ..outfile import write_output

FORMAT = "rig-host-profile/1"


class ProfileError(RigError):
    pass


@dataclass
class KernelInfo:
    release: str | None = None
    flags: list[str] = field(default_factory=list)
    bugs: list[str] = field(default_factory=list)
    #: True when flags/bugs were derived by the rig (e.g. from a libvirt dump), not read
    assumed: bool = False
    #: for assumed caps: which flags were assumed and by which rule (flag -> reason)
    assumed_reasons: dict[str, str] = field(default_factory=dict)
    cmdline: str | None = None


@dataclass
class KvmModule:
    name: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class KvmInfo:
    device: str = "/dev/kvm"
    #: None when /dev/kvm could not be opened; ``error`` then says why
    api_version: int | None = None
    error: str | None = None
    #: "kvm_amd", "kvm_intel", or None (e.g. PVM hosts expose another module)
    vendor_module: str | None = None
    modules: list[KvmModule] = field(default_factory=list)
    supported: CpuidTable | None = None
    emulated: CpuidTable | None = None
    #: the ioctl answers exactly as returned: [function, index, flags, eax, ebx, ecx, edx] per entry, in order
    supported_entries: list[list[int]] | None = None
    emulated_entries: list[list[int]] | None = None

    def params(self, module: str) -> dict[str, str]:
        for m in self.modules:
            if m.name == module:
                return m.params
        return {}


@dataclass
class QemuBinary:
    path: str
    version: str | None = None
    error: str | None = None


@dataclass
class HostProfile:
    raw: CpuidTable
    kernel: KernelInfo = field(default_factory=KernelInfo)
    kvm: KvmInfo = field(default_factory=KvmInfo)
    qemu: list[QemuBinary] = field(default_factory=list)
    #: "capture", "emulated", "import:cpuid-r", "import:libvirt", ...
    source: str = "capture"
    name: str | None = None
    hostname: str | None = None
    captured_at: str | None = None
    microcode: str | None = None
    model_name: str | None = None
    missing: list[str] = field(default_factory=list)
    #: free-form notes (e.g. emulated-host CPU model and QEMU used)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def vendor(self) -> str | None:
        return self.raw.vendor

    # -- JSON ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        kvm = asdict(self.kvm)
        kvm["supported"] = self.kvm.supported.to_json() if self.kvm.supported is not None else None
        kvm["emulated"] = self.kvm.emulated.to_json() if self.kvm.emulated is not None else None
        return {
            "format": FORMAT,
            "name": self.name,
            "source": self.source,
            "hostname": self.hostname,
            "captured_at": self.captured_at,
            "vendor": self.vendor,
            "model_name": self.model_name,
            "microcode": self.microcode,
            "raw": self.raw.to_json(),
            "kernel": asdict(self.kernel),
            "kvm": kvm,
            "qemu": [asdict(q) for q in self.qemu],
            "missing": list(self.missing),
            "notes": self.notes,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the profile to ``path`` (``-``: standard output; devices and FIFOs in place): rig.outfile."""
        write_output(path, self.dumps())

    @classmethod
    def from_json(cls, d: Any, where: str = "profile") -> HostProfile:
        if not isinstance(d, dict):
            raise ProfileError(f"{where}: not a host profile (top level is not an object)")
        if d.get("format") != FORMAT:
            raise ProfileError(
                f"{where}: not a host profile (format {d.get('format')!r}, expected {FORMAT!r})",
                hint="create one with `rig host capture` or `rig host import`",
            )
        f = _Fields(where)
        try:
            raw = CpuidTable.from_json(d["raw"], f"{where}: raw")
            k = f.obj(d, "kernel")
            kernel = KernelInfo(
                release=f.opt_str(k, "kernel.release"),
                flags=f.str_list(k, "kernel.flags"),
                bugs=f.str_list(k, "kernel.bugs"),
                assumed=f.boolean(k, "kernel.assumed"),
                assumed_reasons=f.str_map(k, "kernel.assumed_reasons"),
                cmdline=f.opt_str(k, "kernel.cmdline"),
            )
            v = f.obj(d, "kvm")
            modules = []
            for i, m in enumerate(f.list(v, "kvm.modules")):
                m = f.item(m, f"kvm.modules[{i}]")
                modules.append(KvmModule(f.string(m, f"kvm.modules[{i}].name"), f.str_map(m, f"kvm.modules[{i}].params")))
            kvm = KvmInfo(
                device=f.opt_str(v, "kvm.device") or "/dev/kvm",
                api_version=f.opt_int(v, "kvm.api_version"),
                error=f.opt_str(v, "kvm.error"),
                vendor_module=f.opt_str(v, "kvm.vendor_module"),
                modules=modules,
                supported=CpuidTable.from_json(v["supported"], f"{where}: kvm.supported") if v.get("supported") else None,
                emulated=CpuidTable.from_json(v["emulated"], f"{where}: kvm.emulated") if v.get("emulated") else None,
                supported_entries=f.entries(v, "kvm.supported_entries"),
                emulated_entries=f.entries(v, "kvm.emulated_entries"),
            )
            qemu = []
            for i, q in enumerate(f.list(d, "qemu")):
                q = f.item(q, f"qemu[{i}]")
                qemu.append(QemuBinary(f.string(q, f"qemu[{i}].path"), f.opt_str(q, f"qemu[{i}].version"),
                                       f.opt_str(q, f"qemu[{i}].error")))
            top = {key: f.opt_str(d, key) for key in ("source", "name", "hostname", "captured_at", "microcode",
                                                        "model_name")}
            missing, notes = f.str_list(d, "missing"), f.obj(d, "notes")
        except KeyError as e:
            raise ProfileError(f"{where}: malformed host profile: missing {e.args[0]!r}") from None
        except (TypeError, AttributeError) as e:
            raise ProfileError(f"{where}: malformed host profile: {e}") from None
        except CpuidFormatError as e:
            raise ProfileError(str(e)) from None
        return cls(raw=raw, kernel=kernel, kvm=kvm, qemu=qemu, source=top["source"] or "capture", name=top["name"],
                   hostname=top["hostname"], captured_at=top["captured_at"], microcode=top["microcode"],
                   model_name=top["model_name"], missing=missing, notes=dict(notes))

    @classmethod
    def load(cls, path: str | Path) -> HostProfile:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ProfileError(f"{p}: cannot read: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ProfileError(f"{p}: not UTF-8 text (byte {e.start}): not a host profile") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProfileError(f"{p}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_json(data, str(p))


class _Fields:
    """Typed reads of a profile's JSON fields: a wrong type is a :class:`ProfileError` naming the key."""

    def __init__(self, where: str) -> None:
        self.where = where

    def _bad(self, key: str, expected: str, got: Any) -> ProfileError:
        return ProfileError(f"{self.where}: {key}: expected {expected}, got {type(got).__name__} {got!r:.40}")

    @staticmethod
    def _leaf(key: str) -> str:
        return key.rsplit(".", 1)[-1]

    def item(self, v: Any, key: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self._bad(key, "an object", v)
        return v

    def obj(self, d: dict[str, Any], key: str) -> dict[str, Any]:
        v = d.get(self._leaf(key))
        return {} if v is None else self.item(v, key)

    def list(self, d: dict[str, Any], key: str) -> list[Any]:
        v = d.get(self._leaf(key))
        if v is None:
            return []
        if not isinstance(v, list):
            raise self._bad(key, "a list", v)
        return v

    def string(self, d: dict[str, Any], key: str) -> str:
        v = d[self._leaf(key)]
        if not isinstance(v, str):
            raise self._bad(key, "a string", v)
        return v

    def opt_str(self, d: dict[str, Any], key: str) -> str | None:
        return None if d.get(self._leaf(key)) is None else self.string(d, key)

    def opt_int(self, d: dict[str, Any], key: str) -> int | None:
        v = d.get(self._leaf(key))
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise self._bad(key, "an integer", v)
        return v

    def boolean(self, d: dict[str, Any], key: str) -> bool:
        v = d.get(self._leaf(key), False)
        if not isinstance(v, bool):
            raise self._bad(key, "true or false", v)
        return v

    def str_list(self, d: dict[str, Any], key: str) -> list[str]:
        v = self.list(d, key)
        if not all(isinstance(x, str) for x in v):
            raise self._bad(key, "a list of strings", v)
        return list(v)

    def str_map(self, d: dict[str, Any], key: str) -> dict[str, str]:
        v = self.obj(d, key)
        if not all(isinstance(x, str) for x in v.values()):
            raise self._bad(key, "an object of strings", v)
        return dict(v)

    def entries(self, d: dict[str, Any], key: str) -> list[list[int]] | None:
        v = d.get(self._leaf(key))
        if v is None:
            return None
        if not isinstance(v, list) or not all(
                isinstance(row, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in row) for row in v):
            raise self._bad(key, "a list of [function, index, flags, eax, ebx, ecx, edx] rows", v)
        return v
