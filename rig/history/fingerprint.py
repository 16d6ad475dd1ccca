"""Host fingerprints: which machine a run ran on, and with what software.

``host_key`` identifies the machine (hostname + CPU model name): the history
compares a run with the previous run of the same ``host_key``.  The
``fingerprint`` adds what nightly runs are about (microcode, kernel release,
QEMU version); when it differs from the previous run's, ``rig history`` says
which component changed next to the bits that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostFingerprint:
    hostname: str
    cpu_model: str
    microcode: str
    kernel: str
    qemu: str

    @property
    def host_key(self) -> str:
        return hashlib.sha256(f"{self.hostname}\0{self.cpu_model}".encode()).hexdigest()[:12]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def to_json(self) -> dict:
        return {**asdict(self), "host_key": self.host_key, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, d: dict) -> HostFingerprint:
        return cls(d["hostname"], d["cpu_model"], d["microcode"], d["kernel"], d["qemu"])

    def changes(self, other: HostFingerprint) -> list[str]:
        """Components that differ from ``other`` (the earlier run): "kernel 6.1.0 -> 6.12.0"."""
        a, b = asdict(other), asdict(self)
        return [f"{k} {a[k]} -> {b[k]}" for k in a if a[k] != b[k]]


def _cpuinfo(text: str, key: str) -> str:
    m = re.search(rf"^{re.escape(key)}\s*:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else "unknown"


def current(qemu_version: str, cpuinfo_path: Path = Path("/proc/cpuinfo")) -> HostFingerprint:
    try:
        text = cpuinfo_path.read_text()
    except OSError:
        text = ""
    return HostFingerprint(
        hostname=socket.gethostname(), cpu_model=_cpuinfo(text, "model name"), microcode=_cpuinfo(text, "microcode"),
        kernel=os.uname().release, qemu=qemu_version,
    )
