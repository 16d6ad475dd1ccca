"""The typed axes of a case: host, guest and machine, parsed once from their matrix strings.

=================================  ============================================================
matrix string                      value
=================================  ============================================================
``native``                         :class:`NativeHost`
``simulate``                       :class:`SimulatedHost` (no profile: TCG only)
``simulate:PROFILE[@KERNEL]``      :class:`SimulatedHost` (KVM predicted from a saved profile)
``emulated:MODEL@KERNEL[,p=v..]``  :class:`EmulatedHostSpec` (real KVM of a Debian kernel in L1)
``probe`` / ``ssh``                :class:`GuestSpec` of that :class:`GuestKind`
``linux`` / ``linux@KERNEL``       :class:`GuestSpec` (``kernel`` None: the recipe's default)
``microvm`` / ``q35`` / ``pc``     :class:`MachineSpec` with the machine's default :class:`BootForm`
``q35+pvh`` / ``pc+qboot``         :class:`MachineSpec` with a forced probe boot form
=================================  ============================================================

Every value prints (``str()``) as the canonical matrix string, which is what a case's
identity, its JSON and its id are made of.  Nothing downstream parses these strings again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from .errors import RigError


class CaseSpecError(RigError):
    pass


# ------------------------------------------------------------------ hosts

class HostKind(StrEnum):
    NATIVE = "native"
    SIMULATE = "simulate"
    EMULATED = "emulated"


@dataclass(frozen=True)
class NativeHost:
    """This machine: its QEMU, its ``/dev/kvm``."""

    kind = HostKind.NATIVE

    def __str__(self) -> str:
        return "native"


@dataclass(frozen=True)
class SimulatedHost:
    """No QEMU starts: the prediction is the result.  ``profile``: a saved host profile (needed for
    ``-accel kvm``: KVM's supported table is predicted from it by the policy model for ``kernel``,
    default the profile's own kernel release)."""

    profile: str | None = None
    kernel: str | None = None
    kind = HostKind.SIMULATE

    def __str__(self) -> str:
        if self.profile is None:
            return "simulate"
        return f"simulate:{self.profile}" + (f"@{self.kernel}" if self.kernel else "")


KVM_MODULE_NAMES = ("kvm", "kvm_amd", "kvm_intel", "irqbypass")


def parse_params(items: list[str] | tuple[str, ...] | Mapping[str, str] | None,
                 error: type[RigError] = CaseSpecError) -> dict[str, str]:
    """``["kvm_amd.npt=0", "nested=0"]`` -> ``{"kvm_amd.npt": "0", "kvm_amd.nested": "0"}``.

    A parameter without a module prefix belongs to kvm_amd (the vendor module of an emulated AMD host).
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        pairs = []
        for it in items:
            key, sep, value = it.partition("=")
            if not sep or not key or not value or any(c.isspace() for c in it):
                raise error(f"KVM parameter {it!r} is not MODULE.NAME=VALUE (e.g. kvm_amd.npt=0)")
            pairs.append((key, value))
    out: dict[str, str] = {}
    for key, value in pairs:
        key = key.replace("-", "_") if "." not in key else key
        mod, dot, name = key.rpartition(".")
        if not dot:
            mod, name = "kvm_amd", key
        mod = mod.replace("-", "_")
        if mod not in KVM_MODULE_NAMES:
            raise error(f"KVM parameter {key!r}: module {mod!r} is not one of {', '.join(KVM_MODULE_NAMES)}")
        out[f"{mod}.{name}"] = value
    return out


def params_label(params: Mapping[str, str]) -> str:
    """``{"kvm_amd.npt": "0"}`` -> ``"npt=0"`` (kvm_amd prefix dropped), sorted, comma-joined."""
    return ",".join(f"{k.removeprefix('kvm_amd.')}={v}" for k, v in sorted(params.items()))


@dataclass(frozen=True)
class EmulatedHostSpec:
    """``emulated:EPYC-Rome@6.12,npt=0``: the L1 CPU model, the kernel request, KVM module parameters."""

    cpu: str
    kernel: str
    param_items: tuple[tuple[str, str], ...] = ()
    kind = HostKind.EMULATED

    @property
    def params(self) -> dict[str, str]:
        return dict(self.param_items)

    def __str__(self) -> str:
        p = params_label(self.params)
        return f"emulated:{self.cpu}@{self.kernel}" + (f",{p}" if p else "")


HostSpec = NativeHost | SimulatedHost | EmulatedHostSpec


def parse_emulated(text: str, error: type[RigError] = CaseSpecError) -> EmulatedHostSpec:
    """``[emulated:]MODEL@KERNEL[,param=value...]`` -> :class:`EmulatedHostSpec`."""
    body = text.removeprefix("emulated:")
    model, at, rest = body.partition("@")
    kernel, _, plist = rest.partition(",")
    if not at or not model or not kernel:
        raise error(f"emulated host {text!r} is not emulated:MODEL@KERNEL[,param=value...]",
                    hint="e.g. emulated:EPYC-Rome@6.12 or emulated:EPYC@7.x,npt=0")
    params = parse_params([p for p in plist.split(",") if p], error)
    return EmulatedHostSpec(model, kernel, tuple(sorted(params.items())))


def parse_host(text: str) -> HostSpec:
    if text == "native":
        return NativeHost()
    if text == "simulate":
        return SimulatedHost()
    if text.startswith("simulate:"):
        path, _, kernel = text.removeprefix("simulate:").partition("@")
        if not path:
            raise CaseSpecError(f"host {text!r}: simulate: needs a profile (simulate:PROFILE[@KERNEL])")
        return SimulatedHost(path, kernel or None)
    if text.startswith("emulated:"):
        return parse_emulated(text)
    raise CaseSpecError(f"host {text!r} is not native, simulate[:PROFILE[@KERNEL]] or emulated:MODEL@KERNEL",
                        hint="e.g. hosts = [\"native\"]")


# ------------------------------------------------------------------ guests

class GuestKind(StrEnum):
    PROBE = "probe"
    LINUX = "linux"
    SSH = "ssh"


@dataclass(frozen=True)
class GuestSpec:
    """``probe``, ``linux``, ``linux@KERNEL`` or ``ssh`` (only the linux guest takes a kernel)."""

    kind: GuestKind
    kernel: str | None = None

    def __str__(self) -> str:
        return str(self.kind) + (f"@{self.kernel}" if self.kernel else "")


def parse_guest(text: str) -> GuestSpec:
    name, sep, arg = text.partition("@")
    try:
        kind = GuestKind(name)
    except ValueError:
        raise CaseSpecError(f"guest {text!r} cannot be run by `rig run` (runnable: "
                            f"{', '.join(k.value for k in GuestKind)})",
                            hint="use guests = [\"probe\"], [\"linux\"] or [\"ssh\"] in the matrix") from None
    if sep and (kind != GuestKind.LINUX or not arg):
        raise CaseSpecError(f"guest {text!r}: only the linux guest takes an argument (linux@KERNEL, e.g. linux@6.1)")
    return GuestSpec(kind, arg or None)


# ------------------------------------------------------------------ machines

class BootForm(StrEnum):
    """How the probe boots: a PVH ELF through ``-kernel``, a SeaBIOS boot sector, or the PVH ELF
    under QEMU's minimal qboot firmware (``-bios qboot.rom``)."""

    PVH = "pvh"
    BOOTSECTOR = "bootsector"
    QBOOT = "qboot"


@dataclass(frozen=True)
class MachineSpec:
    """``q35+pvh`` -> base ``q35`` (the ``-machine`` value), form pvh, forced."""

    base: str
    form: BootForm
    forced: bool = False

    @property
    def is_microvm(self) -> bool:
        return self.base.startswith("microvm")

    def __str__(self) -> str:
        return f"{self.base}+{self.form}" if self.forced else self.base


def parse_machine(text: str) -> MachineSpec:
    """``"q35+pvh"`` -> (q35, pvh, forced); ``"microvm"`` -> (microvm, pvh); ``"pc"`` -> (pc, bootsector)."""
    base, sep, forced = text.partition("+")
    if not base:
        raise CaseSpecError(f"machine {text!r}: no machine type before the boot form")
    if sep:
        try:
            form = BootForm(forced)
        except ValueError:
            raise CaseSpecError(f"machine {text!r}: unknown probe form {forced!r} (expected one of: "
                                f"{', '.join(f.value for f in BootForm)})") from None
        return MachineSpec(base, form, True)
    # kvmrun (an emulated host's L2 "machine" without QEMU) loads the PVH probe too
    return MachineSpec(base, BootForm.PVH if base.startswith("microvm") or base == "kvmrun" else BootForm.BOOTSECTOR)
