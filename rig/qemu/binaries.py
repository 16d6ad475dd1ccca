"""Find QEMU binaries, their versions, and what they know about CPU models.

A :class:`QemuBinary` is a path plus its version (from ``--version``) and the
firmware directory to pass with ``-L`` (for unpacked packages).  Requests:

* a path to a binary;
* ``"system"`` or ``None``: ``qemu-system-x86_64`` on ``$PATH``;
* a version such as ``"7.2"`` or ``"10.0"``: the system binary when its version
  matches, else ``rig.images.qemu.fetch_qemu(version)`` (an unpacked Debian
  package in the cache) when that module is available.

Per-binary facts that are the same for every case are taken once and cached on
disk (under the rig cache, keyed by the binary's path, size and mtime):
``query-cpu-definitions`` and the static/full expansions of CPU models.  See
:class:`BinaryFacts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from ..errors import RigError
from .process import QemuProcess
from .qmp import CpuDefinition, ModelExpansion, QmpFailure, QmpSession

SYSTEM_BINARY = "qemu-system-x86_64"
_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


class QemuNotFound(RigError):
    """No QEMU binary matches the request."""


@dataclass(frozen=True)
class QemuBinary:
    path: Path
    version: tuple[int, int, int]
    version_text: str = ""
    firmware_dir: Path | None = None

    @property
    def series(self) -> str:
        """``"7.2"``: the major.minor the model data is keyed by."""
        return f"{self.version[0]}.{self.version[1]}"

    def base_argv(self) -> list[str]:
        argv = [str(self.path)]
        if self.firmware_dir is not None:
            argv += ["-L", str(self.firmware_dir)]
        return argv

    def stat_key(self) -> str:
        st = self.path.stat()
        return f"{self.path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def parse_version(text: str) -> tuple[int, int, int]:
    """``QEMU emulator version 7.2.22 (Debian …)`` -> (7, 2, 22)."""
    m = _VERSION_RE.search(text)
    if not m:
        raise QemuNotFound(f"cannot read a QEMU version from {text.strip()[:80]!r}")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def probe_binary(path: str | Path, firmware_dir: Path | None = None) -> QemuBinary:
    p = Path(path)
    if not p.exists():
        raise QemuNotFound(f"QEMU binary {p} does not exist")
    try:
        out = subprocess.run([str(p), "--version"], capture_output=True, text=True, timeout=20, check=False)
    except OSError as e:
        raise QemuNotFound(f"QEMU binary {p} cannot run: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise QemuNotFound(f"QEMU binary {p} did not answer --version within 20 s") from None
    if out.returncode != 0:
        raise QemuNotFound(f"{p} --version failed: {out.stderr.strip().splitlines()[-1:] or out.returncode}")
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    return QemuBinary(p, parse_version(out.stdout), first, firmware_dir)


def _version_matches(binary: QemuBinary, request: str) -> bool:
    want = tuple(int(x) for x in request.split("."))
    return binary.version[: len(want)] == want


def find_qemu(request: str | Path | None = None) -> QemuBinary:
    """Resolve a request (path, ``"system"``/None, or a version) to a binary."""
    if isinstance(request, Path) or (request and ("/" in str(request))):
        return probe_binary(Path(request))
    if request in (None, "", "system"):
        found = shutil.which(SYSTEM_BINARY)
        if not found:
            raise QemuNotFound(f"{SYSTEM_BINARY} is not on PATH", hint="install qemu-system-x86")
        return probe_binary(found)
    req = str(request)
    if not re.fullmatch(r"\d+(\.\d+){0,2}", req):
        raise QemuNotFound(f"QEMU request {req!r} is neither a path nor a version like 7.2")
    found = shutil.which(SYSTEM_BINARY)
    if found:
        sysbin = probe_binary(found)
        if _version_matches(sysbin, req):
            return sysbin
    try:
        from ..images import qemu as images_qemu  # provided by the images module
    except ImportError:
        raise QemuNotFound(f"no QEMU {req}: the system has {'none' if not found else sysbin.series}"
                           " and rig.images.qemu is not available") from None
    fetched = images_qemu.fetch_qemu(req)
    return _from_fetched(fetched)


def _from_fetched(fetched: Any) -> QemuBinary:
    """Accept what ``fetch_qemu`` returns: a QemuBinary-like object or a path."""
    if isinstance(fetched, QemuBinary):
        return fetched
    if isinstance(fetched, (str, Path)):
        return probe_binary(Path(fetched))
    path = getattr(fetched, "binary", None) or getattr(fetched, "path", None)
    fw = getattr(fetched, "firmware_dir", None) or getattr(fetched, "datadir", None)
    if path is None:
        raise QemuNotFound(f"fetch_qemu returned {type(fetched).__name__} without a binary path")
    return probe_binary(Path(path), Path(fw) if fw else None)


# ---------------------------------------------------------------------------
# per-binary facts (cached)


@dataclass
class BinaryFacts:
    """What one binary says about CPU models under one accelerator and machine.

    ``definitions``: ``query-cpu-definitions``; ``static``: model name ->
    static expansion (``base`` + properties); ``full``: model name -> full
    expansion.  Taken by :func:`gather_facts` in one short ``-S`` QEMU run.
    """

    binary: str
    version: tuple[int, int, int]
    accel: str
    machine: str
    definitions: list[CpuDefinition] = field(default_factory=list)
    static: dict[str, ModelExpansion] = field(default_factory=dict)
    full: dict[str, ModelExpansion] = field(default_factory=dict)

    def model_names(self, *, include_aliases: bool = True) -> list[str]:
        return sorted(d.name for d in self.definitions if include_aliases or not d.is_alias)

    def to_json(self) -> dict[str, Any]:
        return {
            "binary": self.binary,
            "version": list(self.version),
            "accel": self.accel,
            "machine": self.machine,
            "definitions": [d.to_json() for d in self.definitions],
            "static": {k: v.to_json() for k, v in self.static.items()},
            "full": {k: v.to_json() for k, v in self.full.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BinaryFacts:
        return cls(
            binary=d["binary"],
            version=tuple(d["version"]),  # type: ignore[arg-type]
            accel=d["accel"],
            machine=d["machine"],
            definitions=[CpuDefinition.from_qmp(x) for x in d["definitions"]],
            static={k: ModelExpansion.from_qmp(v) for k, v in d["static"].items()},
            full={k: ModelExpansion.from_qmp(v) for k, v in d.get("full", {}).items()},
        )


def _facts_cache_path(binary: QemuBinary, accel: str, machine: str, expansions: str) -> Path:
    from ..images.cache import cache_root, digest

    key = digest([binary.stat_key(), accel, machine, expansions, "facts/1"])
    return cache_root() / "qemu-facts" / f"{key}.json"


async def _gather(binary: QemuBinary, accel: str, machine: str, expansions: tuple[str, ...],
                  timeout: float) -> BinaryFacts:
    rundir = Path(tempfile.mkdtemp(prefix="rig-qf-"))
    sock = rundir / "qmp.sock"
    client = QMPClient("rig-facts")
    proc = None
    try:
        await client.start_server(str(sock))
        argv = binary.base_argv() + [
            "-machine", machine, "-accel", accel, "-S", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "none", "-monitor", "none", "-qmp", f"unix:{sock}",
        ]
        # like every QEMU the rig starts: its own process group, SIGKILL when the rig dies (rig.qemu.process)
        proc = QemuProcess.start(argv, stderr=rundir / "stderr.log")
        accept = asyncio.ensure_future(client.accept())
        died = asyncio.ensure_future(proc.wait_async())
        done, _ = await asyncio.wait({accept, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if accept not in done:
            accept.cancel()
            err = proc.stderr_text().strip() if died in done else ""
            raise QemuNotFound(f"{binary.path}: QMP not ready ({err.splitlines()[-1] if err else 'timeout'})")
        died.cancel()
        accept.result()
        s = QmpSession(client)
        facts = BinaryFacts(str(binary.path), binary.version, accel, machine)
        facts.definitions = await s.cpu_definitions()
        for name in (d.name for d in facts.definitions):
            if "static" in expansions:
                with contextlib.suppress(QmpFailure):  # host/max: not static-expandable without KVM
                    facts.static[name] = await s.cpu_model_expansion(name, "static")
            if "full" in expansions:
                with contextlib.suppress(QmpFailure):
                    facts.full[name] = await s.cpu_model_expansion(name, "full")
        with contextlib.suppress(QmpFailure):
            await s.quit()
        return facts
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait_async()
        shutil.rmtree(rundir, ignore_errors=True)


def _run_coroutine(coro: Any) -> Any:
    """Run ``coro`` to completion from synchronous code, also when the caller itself runs inside
    an event loop (``rig run`` predicts inside its loop): there in a short-lived thread of its own,
    since ``asyncio.run`` refuses a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name="rig-qemu-facts")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def gather_facts(binary: QemuBinary, *, accel: str = "tcg", machine: str = "none",
                 expansions: tuple[str, ...] = ("static",), use_cache: bool = True,
                 timeout: float = 60.0) -> BinaryFacts:
    """Definitions and expansions of every model, from one ``-S`` run; cached on disk."""
    path = _facts_cache_path(binary, accel, machine, ",".join(sorted(expansions)))
    if use_cache and path.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return BinaryFacts.from_json(json.loads(path.read_text()))
    facts = _run_coroutine(_gather(binary, accel, machine, tuple(expansions), timeout))
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(facts.to_json()))
        tmp.replace(path)
    return facts


def cpu_definitions(binary: QemuBinary, *, accel: str = "tcg", machine: str = "none") -> list[CpuDefinition]:
    """``query-cpu-definitions`` of ``binary`` (cached per binary, accel and machine)."""
    return gather_facts(binary, accel=accel, machine=machine, expansions=()).definitions
