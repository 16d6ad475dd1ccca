"""Writing a file the user named (``-o FILE``, ``--out DIR``) without ever destroying what is there.

What happens depends on what the name is when the write starts:

* a regular file, or a new name: the bytes go to a temporary file in the same directory, which is
  then renamed over the target (atomic: readers see the old file or the new one, never a mix; an
  error leaves the old file as it was and no temporary file behind).  An existing file keeps its permission
  bits (and its owner, when the rig runs as root); a symbolic link to a regular file stays a link (its target
  is replaced).
* anything else that exists (a character or block device such as ``/dev/null``, a FIFO, a link to
  one): opened and written in place, never replaced by a regular file.
* ``-``: standard output; ``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``: written through that descriptor of
  the rig (so ``-o /dev/stdout >>log`` appends, as a shell user expects, instead of renaming over the log).
* a directory: :class:`OutputError` (exit status 2), nothing written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import sys
from pathlib import Path

from .errors import RigError

STDOUT = "-"


class OutputError(RigError):
    pass


def is_stdout(target: str | os.PathLike[str] | None) -> bool:
    """True for ``-`` and the names of the rig's descriptor 1 (``/dev/stdout``): output that goes to standard
    output (commands then print their notes to standard error)."""
    if target is None or not os.fspath(target):
        return False
    return os.fspath(target) == STDOUT or _open_descriptor(os.fspath(target)) == 1


def describe(target: str | os.PathLike[str]) -> str:
    """How to name the output in a message: the path, or ``standard output`` for ``-``."""
    return "standard output" if os.fspath(target) == STDOUT else os.fspath(target)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def write_output(target: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to the output the user named; see the module docstring."""
    blob = data.encode() if isinstance(data, str) else data
    if is_stdout(target):
        _write_stdout(blob)
        return
    name = os.fspath(target)
    if not name:
        raise OutputError("empty output file name", hint="name a file, or - for standard output")
    fd = _open_descriptor(name)
    if fd is not None:
        _write_descriptor(name, fd, blob)
        return
    try:
        st = os.stat(name)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{name}: cannot write: {_reason(e)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{name}: is a directory", hint=f"name a file in it, e.g. {os.path.join(name, 'out.json')}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        _write_in_place(name, blob, st)
    else:
        _replace(os.path.realpath(name), blob, st, shown=name)


def output_directory(target: str | os.PathLike[str]) -> Path:
    """Make sure ``target`` is a directory to write into (created with its parents if missing)."""
    p = Path(target)
    if is_stdout(target):
        raise OutputError("- (standard output) cannot take several files", hint="name a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{p}: exists and is not a directory", hint="name a directory (new or existing)") from None
    except OSError as e:
        raise OutputError(f"{p}: cannot create the directory: {_reason(e)}") from None
    return p


_FD_NAME = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")
_STD_NAMES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _open_descriptor(name: str) -> int | None:
    """The rig's own descriptor when ``name`` is one (/dev/stdout, /dev/fd/N, /proc/self/fd/N): written through
    that descriptor, whatever it is open on (``-o /dev/stdout >>log`` appends to the log instead of replacing it)."""
    p = os.path.abspath(name)
    for _ in range(8):  # /dev/stdout -> /proc/self/fd/1, and links to those
        if p in _STD_NAMES:
            return _STD_NAMES[p]
        m = _FD_NAME.match(p)
        if m:
            return int(m.group(2)) if m.group(1) is None or int(m.group(1)) == os.getpid() else None
        if not os.path.islink(p) or p.startswith("/proc/"):
            return None
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return None


def _write_descriptor(name: str, fd: int, blob: bytes) -> None:
    if fd in (1, 2):
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what was printed before comes first
    try:
        _write_all(fd, blob)
    except OSError as e:
        raise OutputError(f"{name}: write failed: {_reason(e)}") from None


def _write_stdout(blob: bytes) -> None:
    out = sys.stdout
    out.flush()
    buf = getattr(out, "buffer", None)
    if buf is not None:
        buf.write(blob)
        buf.flush()
    else:
        out.write(blob.decode(errors="replace"))
        out.flush()


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_in_place(name: str, blob: bytes, st: os.stat_result) -> None:
    """Devices, FIFOs: open the existing node and write into it (O_TRUNC is a no-op for them)."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        kind = "socket" if stat.S_ISSOCK(st.st_mode) else "special file"
        hint = "sockets cannot be opened as files" if e.errno == errno.ENXIO else None
        raise OutputError(f"{name}: cannot write to this {kind}: {_reason(e)}", hint=hint) from None
    try:
        _write_all(fd, blob)
    except OSError as e:
        raise OutputError(f"{name}: write failed: {_reason(e)}") from None
    finally:
        os.close(fd)


def _replace(real: str, blob: bytes, old: os.stat_result | None, *, shown: str) -> None:
    """Temporary file next to ``real``, then rename over it; the temporary file never outlives an error.
    The new file keeps the old one's permission bits, and (when the rig runs as root) its owner."""
    directory, base = os.path.split(real)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # 0o666 through the umask, like any new file; an existing file's mode is restored below
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileNotFoundError:
        raise OutputError(f"{shown}: directory {directory or '.'} does not exist",
                          hint="create it first, or name a file in an existing directory") from None
    except OSError as e:
        raise OutputError(f"{shown}: cannot write in {directory or '.'}: {_reason(e)}") from None
    try:
        try:
            if old is not None:
                if os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
                    os.fchown(fd, old.st_uid, old.st_gid)
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
            _write_all(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, real)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"{shown}: write failed: {_reason(e)}") from None
        raise
