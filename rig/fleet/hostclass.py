"""Host classes: the hosts whose guests see the same CPUID, and the queue each class's shards go to.

A guest's CPUID depends on the physical CPU (vendor, family, model, stepping, model
name, microcode), the host kernel and QEMU.  A host's class is named after those,
readable first and with a short hash of everything, e.g.
``amd-f25m1s1-k6.1.0-28-cloud-amd64-q7.2.11-3f9c2a``.  ``rig fleet worker --class``
overrides it (tests; hosts pooled on purpose).

Cases on ``emulated:`` hosts (and ``simulate:PROFILE`` hosts) do not depend on the
worker's CPU: they carry their own class, the host string itself
(``emulated:EPYC-Milan@6.16.12``), and go to one shared queue that every worker
consumes, so any worker may take them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import RigError

CLASS_QUEUE_PREFIX = "rig.class."
PORTABLE_QUEUE = "rig.portable"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=,:-]{0,159}$")
_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel", "HygonGenuine": "hygon", "CentaurHauls": "centaur"}


class HostClassError(RigError):
    pass


@dataclass(frozen=True)
class HostClass:
    vendor: str
    family: int
    model: int
    stepping: int
    model_name: str
    microcode: str
    kernel: str
    qemu: str

    @property
    def name(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:6]
        vendor = _VENDORS.get(self.vendor, re.sub(r"[^a-z0-9]", "", self.vendor.lower()) or "unknown")
        raw = f"{vendor}-f{self.family}m{self.model}s{self.stepping}-k{self.kernel}-q{self.qemu}-{h}"
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", raw)

    def to_json(self) -> dict:
        return {**asdict(self), "name": self.name}


def _field(text: str, key: str, default: str = "unknown") -> str:
    m = re.search(rf"^{re.escape(key)}\s*:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else default


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        return -1


def this_host(qemu_version: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> HostClass:
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    return HostClass(vendor=_field(text, "vendor_id"), family=_int(_field(text, "cpu family", "-1")),
                     model=_int(_field(text, "model", "-1")), stepping=_int(_field(text, "stepping", "-1")),
                     model_name=_field(text, "model name"), microcode=_field(text, "microcode"),
                     kernel=os.uname().release, qemu=qemu_version)


def check_name(name: str) -> str:
    """A class name from the command line (the edge): non-empty, no spaces or slashes."""
    if not _NAME_RE.match(name):
        raise HostClassError(f"{name!r} is not a host class name (letters, digits and _.@+=,:- only)",
                             hint="`rig fleet worker` prints this host's class; use such names in --classes")
    return name


def is_portable(host_class: str) -> bool:
    """Classes any worker may run: emulated hosts and simulations of a saved profile."""
    return host_class.startswith(("emulated:", "simulate:"))


def class_of_case_host(host: str) -> str | None:
    """The class a case carries itself (``emulated:...``), or None when it is the worker's (``native``)."""
    return host if is_portable(host) else None


def queue_for(host_class: str) -> str:
    return PORTABLE_QUEUE if is_portable(host_class) else CLASS_QUEUE_PREFIX + host_class
