"""One QEMU process, the one way the rig starts QEMU (run launcher, SSH guests, emulated hosts).

A :class:`QemuProcess`:

* writes its command line first (``cmdline.txt``, shell-quoted) when given a path, so a
  QEMU that fails to start still leaves the exact command to reproduce it;
* runs in its own session (process group), stdin and stdout to nowhere, stderr to a log
  file;
* dies with the rig: it is started under util-linux ``setpriv --pdeathsig KILL`` (the
  parent-death signal survives the exec into QEMU, and without a ``preexec_fn`` Python
  starts the child with vfork), or with ``prctl(PR_SET_PDEATHSIG)`` in a ``preexec_fn``
  when setpriv is missing.  The signal follows the *thread* that started QEMU: start it
  from a thread that outlives it (the event loop's thread, or one dedicated thread);
* is watched through a pidfd in the running event loop (:meth:`wait_async`; no thread per
  child), or waited for synchronously (:meth:`wait`);
* stops by escalation: SIGTERM to its process group, then SIGKILL (:meth:`stop`,
  :meth:`stop_async`), or SIGKILL at once (:meth:`kill`, for cancellation);
* is a context manager (``with`` and ``async with``): leaving the block stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
#: seconds between SIGTERM and SIGKILL in :meth:`QemuProcess.stop`
TERM_GRACE = 1.0


def _resolve_prctl():
    """libc's prctl, looked up once in the rig (the forked child must not import or load anything)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_SETPRIV = shutil.which("setpriv")
_PRCTL = _resolve_prctl() if _SETPRIV is None else None


def _die_with_parent() -> None:
    """Fallback (no setpriv) in the child before exec: SIGKILL when the rig dies."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def spawn_argv(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """(argv to exec, preexec_fn): ``argv`` under ``setpriv --pdeathsig KILL``, or prctl in a preexec_fn."""
    if _SETPRIV is not None:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv], None
    return argv, _die_with_parent


# ------------------------------------------------------------------ QEMU's messages

def strip_prog(line: str) -> str:
    for prefix in ("qemu-system-x86_64: ", "qemu: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    if line.startswith("error: "):
        line = line[len("error: "):]
    return line


def error_line(stderr: str) -> str:
    """The most telling line of QEMU's stderr: the first error, without warnings."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if not any(p in ln for p in ("warning:", "terminating on signal"))]
    if not errors:
        return lines[-1] if lines else ""
    for ln in errors:
        if "error" in ln.lower() or "failed" in ln.lower():
            return strip_prog(ln)
    return strip_prog(errors[0])


# ------------------------------------------------------------------ the process

class QemuProcess:
    """A started QEMU (see the module doc).  Make one with :meth:`start`."""

    def __init__(self, popen: subprocess.Popen, argv: list[str], stderr_path: Path | None,
                 serial_path: Path | None = None) -> None:
        self.popen = popen
        self.serial_path = serial_path
        self.pid = popen.pid
        self.argv = argv
        self.stderr_path = stderr_path
        self.started = time.monotonic()
        self._exited: asyncio.Future[int] | None = None
        self._pidfd: int | None = None
        #: how it was stopped ("SIGTERM", "SIGKILL"; empty: it exited by itself)
        self.stopped_by = ""

    @classmethod
    def start(cls, argv: list[str], *, stderr: Path | IO[bytes] | None, cmdline: Path | None = None,
              serial: Path | None = None, stdin: int | IO[bytes] = subprocess.DEVNULL) -> QemuProcess:
        """Start ``argv``; ``stderr``: a log file path (created) or an open binary file; ``cmdline``: where the
        command line goes first; ``serial``: the serial log the command line writes (for :meth:`serial_tail`).  Raises :class:`OSError` (e.g. ``FileNotFoundError``) when it cannot start."""
        if cmdline is not None:
            cmdline.write_text(shlex.join(argv) + "\n")
        if _SETPRIV is not None and shutil.which(argv[0]) is None:
            # setpriv would start and then fail to exec: say so as the exec itself would
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
        spawn, preexec = spawn_argv(argv)
        path = stderr if isinstance(stderr, Path) else None
        with contextlib.ExitStack() as stack:
            err = stack.enter_context(open(stderr, "wb")) if isinstance(stderr, Path) else stderr
            popen = subprocess.Popen(spawn, stdin=stdin, stdout=subprocess.DEVNULL,
                                     stderr=err if err is not None else subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=preexec)
        return cls(popen, argv, path, serial)

    # -- state -------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        if self._exited is not None and self._exited.done():
            return self._exited.result()
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_text(self) -> str:
        if self.stderr_path is None:
            return ""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def error_line(self) -> str:
        return error_line(self.stderr_text()) or f"exit status {self.popen.returncode}"

    def serial_tail(self, n: int = 1) -> str:
        """The last ``n`` non-empty lines of the serial log, joined by " | "."""
        try:
            text = self.serial_path.read_text(errors="replace") if self.serial_path else ""
        except OSError:
            text = ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) if lines else "(no serial output)"

    # -- waiting -----------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> int:
        """Synchronous wait; raises :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        return self.popen.wait(timeout=timeout)

    def _watch(self) -> asyncio.Future[int]:
        """The exit as a future of the running loop: a pidfd reader (one thread waits without pidfds)."""
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):
                self._pidfd = None
            if self._pidfd is not None:
                loop.add_reader(self._pidfd, self._on_exit)
                self._on_exit()  # it may be gone already
            else:
                waiter = loop.run_in_executor(None, self.popen.wait)
                waiter.add_done_callback(lambda _f: self._on_exit())
        return self._exited

    def _on_exit(self) -> None:
        rc = self.popen.poll()
        if rc is None:
            return  # not yet reaped (spurious wake-up)
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(rc)

    async def wait_async(self) -> int:
        """Wait in the event loop (any number of waiters; cancelling one does not cancel the others)."""
        return await asyncio.shield(self._watch())

    # -- stopping ----------------------------------------------------------------------
    def signal_group(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            self.stopped_by = sig.name

    def kill(self) -> None:
        """SIGKILL the process group now (no wait): the last resort when a run is cancelled."""
        self.signal_group(signal.SIGKILL)

    def stop(self, grace: float = TERM_GRACE) -> int:
        """SIGTERM to the group, ``grace`` seconds, then SIGKILL; returns once QEMU is gone."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
        return self.popen.wait()

    async def stop_async(self, grace: float = TERM_GRACE) -> int:
        """:meth:`stop` in the event loop."""
        if self.returncode is None:
            self.signal_group(signal.SIGTERM)
            try:
                return await asyncio.wait_for(self.wait_async(), timeout=grace)
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.wait_async()

    def __enter__(self) -> QemuProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> QemuProcess:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError | KeyboardInterrupt):
            self.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.wait_async())
            return
        await self.stop_async()
