"""Private runtime directories of launches: QMP sockets and live serial logs on a memory file system.

Each launch makes ``rig-PID-XXXX`` (mode 0700) under :func:`runtime_base`; a rig killed
with SIGKILL leaves its directories behind, and the next rig removes them
(:func:`sweep_stale_runtime_dirs`).  QEMU writes the serial output one ``write()`` per
character, so the work directory's ``serial.log`` is a symbolic link into the runtime
directory while QEMU runs, and the file itself afterwards (:func:`settle_serial`).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from pathlib import Path


def make_runtime_dir() -> Path:
    """A fresh private runtime directory for one launch (stale ones of killed rigs are swept first)."""
    base = runtime_base()
    sweep_stale_runtime_dirs(base)
    d = Path(tempfile.mkdtemp(prefix=f"rig-{os.getpid()}-", dir=base))
    os.chmod(d, 0o700)
    return d


def remove_runtime_dir(d: Path) -> None:
    try:
        (d / "qmp.sock").unlink(missing_ok=True)
        d.rmdir()
    except OSError:
        shutil.rmtree(d, ignore_errors=True)


def runtime_base() -> str | None:
    """Where the private runtime directories go: ``$XDG_RUNTIME_DIR``, else ``/dev/shm``
    (both memory file systems on Debian), else the default temporary directory."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return xdg
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


_STALE_RE = re.compile(r"rig-(\d+)-[^/]+")


@functools.cache
def sweep_stale_runtime_dirs(base: str | None) -> int:
    """Remove runtime directories (``rig-PID-*``) left in ``base`` by rigs that were killed (SIGKILL: no
    cleanup ran), once per process and base; a directory whose PID is alive is kept.  Returns how many
    went.  Their QEMUs are gone too: they ran under the parent-death signal."""
    root = Path(base or tempfile.gettempdir())
    removed = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for d in entries:
        m = _STALE_RE.fullmatch(d.name)
        if m is None or not d.is_dir() or d.is_symlink():
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # alive (or a reused PID): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed


def settle_serial(live: Path, link: Path) -> None:
    """Replace the symbolic link ``link`` (work directory) by the file ``live`` (runtime directory)
    it points to; no file at all when QEMU never wrote it."""
    if not link.is_symlink():
        return
    try:
        data = live.read_bytes()
    except FileNotFoundError:
        link.unlink()
        return
    # in place, no temporary file and rename: a case's artifacts count only once its result
    # is recorded (each file created costs ~0.3 ms of kernel CPU on this machine's ext4)
    link.unlink()
    link.write_bytes(data)
    live.unlink()
