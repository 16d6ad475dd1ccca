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
        try:
            raw = CpuidTable.from_json(d["raw"], f"{where}: raw")
            k = d.get("kernel") or {}
            kernel = KernelInfo(
                release=k.get("release"),
                flags=list(k.get("flags", [])),
                bugs=list(k.get("bugs", [])),
                assumed=bool(k.get("assumed", False)),
                assumed_reasons=dict(k.get("assumed_reasons", {})),
                cmdline=k.get("cmdline"),
            )
            v = d.get("kvm") or {}
            kvm = KvmInfo(
                device=v.get("device", "/dev/kvm"),
                api_version=v.get("api_version"),
                error=v.get("error"),
                vendor_module=v.get("vendor_module"),
                modules=[KvmModule(m["name"], dict(m.get("params", {}))) for m in v.get("modules", [])],
                supported=CpuidTable.from_json(v["supported"], f"{where}: kvm.supported") if v.get("supported") else None,
                emulated=CpuidTable.from_json(v["emulated"], f"{where}: kvm.emulated") if v.get("emulated") else None,
                supported_entries=v.get("supported_entries"),
                emulated_entries=v.get("emulated_entries"),
            )
            qemu = [QemuBinary(q["path"], q.get("version"), q.get("error")) for q in d.get("qemu", [])]
        except KeyError as e:
            raise ProfileError(f"{where}: malformed host profile: missing {e.args[0]!r}") from None
        except (TypeError, AttributeError) as e:
            raise ProfileError(f"{where}: malformed host profile: {e}") from None
        except CpuidFormatError as e:
            raise ProfileError(str(e)) from None
        return cls(
            raw=raw, kernel=kernel, kvm=kvm, qemu=qemu, source=d.get("source", "capture"), name=d.get("name"),
            hostname=d.get("hostname"), captured_at=d.get("captured_at"), microcode=d.get("microcode"),
            model_name=d.get("model_name"), missing=list(d.get("missing", [])), notes=dict(d.get("notes", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> HostProfile:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ProfileError(f"{p}: cannot read: {e.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProfileError(f"{p}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_json(data, str(p))
