"""Reading what a real QEMU configured for a -cpu line (QMP feature-words / filtered-features).

A test helper: one ``qemu -S -qmp stdio`` per case (QEMU cannot realize several
CPU models in one process), no guest; QEMU is always killed on the way out.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rig.cpuid.parse import parse_feature_words
from rig.cpuid.table import CpuidTable


class QemuRefused(Exception):
    """QEMU exited before answering (bad -cpu line, unknown model ...): its stderr."""


def configured(binary: str | Path, cpu: str, machine: str = "microvm", accel: str = "tcg",
               firmware_dir: str | Path | None = None, timeout: float = 20.0) -> tuple[CpuidTable, CpuidTable, str]:
    """(feature-words, filtered-features, stderr) of CPU 0 for ``-cpu cpu``."""
    argv = [str(binary)]
    if firmware_dir:
        argv += ["-L", str(firmware_dir)]
    argv += ["-M", machine, "-accel", accel, "-cpu", cpu, "-S", "-nodefaults", "-no-user-config",
             "-display", "none", "-serial", "none", "-monitor", "none", "-qmp", "stdio"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def ask(cmd: dict) -> object:
            assert proc.stdin and proc.stdout
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
            while True:
                line = proc.stdout.readline()
                if not line:
                    raise QemuRefused(proc.stderr.read() if proc.stderr else "")
                msg = json.loads(line)
                if "return" in msg:
                    return msg["return"]
                if "error" in msg:
                    raise QemuRefused(f"QMP {cmd['execute']}: {msg['error']}")

        ask({"execute": "qmp_capabilities"})
        cpus = ask({"execute": "query-cpus-fast"})
        path = min(cpus, key=lambda c: c.get("cpu-index", 0))["qom-path"]
        fw = ask({"execute": "qom-get", "arguments": {"path": path, "property": "feature-words"}})
        ff = ask({"execute": "qom-get", "arguments": {"path": path, "property": "filtered-features"}})
        return parse_feature_words(fw), parse_feature_words(ff), ""
    finally:
        proc.kill()
        try:
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
