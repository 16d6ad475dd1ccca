"""Launch one QEMU, observe its CPU over QMP, let the guest run, and clean up.

Flow of :func:`launch`:

1. a private runtime directory (mode 0700) holds the QMP socket; the rig listens
   on it and QEMU connects as a client (``-qmp unix:PATH``), so there is no
   polling for a socket to appear (a command whose ``-qmp`` says ``server`` is
   connected to instead, with bounded retries);
2. QEMU starts in its own session/process group, with ``-S`` when QMP queries
   are wanted, stdout to nowhere and stderr to ``stderr.log``;
3. ``qmp_capabilities``, ``query-cpus-fast`` -> qom-path of CPU 0, ``qom-get``
   ``feature-words`` and ``filtered-features``, ``query-cpu-model-expansion``
   (full) of the ``-cpu`` model, ``query-cpu-definitions`` only when asked (it
   is the same for every case of a binary: see
   :func:`rig.qemu.binaries.cpu_definitions`), and then ``cont`` (or ``quit``
   for a query-only launch) are sent at once, right after QEMU's greeting: QEMU
   answers them in order when its start-up is over (see
   :meth:`rig.qemu.qmp.QmpSession.observe_cpu`), so the guest starts only after
   the queries are answered and a paused QEMU never waits for the rig;
4. wait for QEMU to exit within the timeout while the serial log is written to
   the work directory;
5. on timeout: escalating shutdown - QMP ``quit``, then SIGTERM to the process
   group, then SIGKILL; on cancellation (Ctrl-C) SIGKILL to the group at once;
   and QEMU is started with ``PR_SET_PDEATHSIG`` = SIGKILL (by util-linux
   ``setpriv --pdeathsig KILL``, so Python can start it with vfork), so even a
   rig that is killed with ``kill -9`` leaves no QEMU behind.

The result is an :class:`Observation` whose ``outcome`` classifies what
happened (see :func:`classify`); QEMU failing is an outcome, not an exception.

Artifacts in ``spec.workdir``: ``cmdline.txt`` (the command line first,
shell-quoted), ``serial.log``, ``qmp.jsonl`` (every QMP command and reply),
``stderr.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from ..cpuid.table import CpuidTable
from ..results import Outcome
from .process import QemuProcess, error_line, spawn_argv
from .qmp import CpuDefinition, QmpFailure, QmpSession, RigQMPClient, Transcript
from .runtime_dir import make_runtime_dir, remove_runtime_dir, runtime_base, settle_serial

__all__ = ["LaunchSpec", "Observation", "ProbeVerdict", "classify", "error_line", "launch", "launch_sync", "runtime_base",
           "spawn_argv"]

#: the outcomes a launch can have (rig.results.Outcome: all but "simulated" and "rig-error")
OUTCOMES = tuple(o for o in Outcome if o not in (Outcome.SIMULATED, Outcome.RIG_ERROR))

#: isa-debug-exit: QEMU exits with (value << 1) | 1; the probe writes 0x10 on
#: success and 0x11 on failure (guests/probe/probe.h).
PROBE_EXIT_OK = 33
PROBE_EXIT_FAIL = 35

#: Seconds given to each step of the escalating shutdown.
QUIT_GRACE = 0.5
TERM_GRACE = 1.0


def _start(argv: list[str], err_file) -> QemuProcess:
    """Start QEMU as a :class:`rig.qemu.process.QemuProcess` (own process group, parent-death signal)."""
    return QemuProcess.start(argv, stderr=err_file)




@dataclass(frozen=True)
class ProbeVerdict:
    """What the guest's serial output says: did the probe report completely?"""

    complete: bool
    message: str = ""


#: A function of (serial text, QEMU exit code) -> verdict.  The default checks
#: the exit code only; pass ``rig.guest.protocol``-based checks from the caller.
ProbeCheck = Callable[[str, int], ProbeVerdict]


def exit_code_check(serial_text: str, exit_code: int) -> ProbeVerdict:
    if exit_code == PROBE_EXIT_OK:
        return ProbeVerdict(True, "probe exited OK")
    if exit_code == PROBE_EXIT_FAIL:
        return ProbeVerdict(False, "probe reported failure (isa-debug-exit 0x11)")
    return ProbeVerdict(False, f"guest ended without the probe's exit (QEMU exit status {exit_code})")


@dataclass
class LaunchSpec:
    """One QEMU run.

    ``command`` is a :class:`rig.qemu.cmdline.QemuCommand` (anything with an
    ``argv()`` method and, ideally, ``qmp``/``serial`` fields the launcher fills
    in); ``query_only``: quit after the QMP queries instead of running the
    guest (no guest needed; outcome ``ok`` when the queries succeeded).
    """

    command: Any
    name: str
    workdir: Path
    timeout: float = 30.0
    qmp_queries: bool = True
    start_paused: bool = True
    query_only: bool = False
    query_definitions: bool = False
    probe_check: ProbeCheck | None = None
    connect_timeout: float = 10.0
    #: set once QEMU has been started (or could not be): a caller's work that does not need QEMU's
    #: answers (the case's prediction) can run while QEMU starts up instead of after it exits
    started: asyncio.Event | None = None


@dataclass
class Observation:
    argv: list[str]
    exit_code: int | None
    outcome: Outcome
    serial_path: Path | None
    serial_text: str
    qmp_transcript_path: Path | None
    stderr: str
    feature_words: CpuidTable | None = None
    filtered_features: CpuidTable | None = None
    expansion: dict | None = None
    duration_s: float = 0.0
    message: str = ""
    definitions: list[CpuDefinition] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


# ---------------------------------------------------------------------------
# classification (pure)

_NOISE_PREFIXES = ("warning:", "qemu-system-x86_64: warning:", "qemu-system-x86_64: terminating on signal")


def classify(
    *,
    exit_code: int | None,
    timed_out: bool,
    qmp_ready: bool,
    qmp_error: str | None,
    stderr: str,
    serial_text: str = "",
    query_only: bool = False,
    probe_check: ProbeCheck | None = None,
    timeout: float | None = None,
    shutdown: str = "",
) -> tuple[Outcome, str]:
    """(outcome, one-line message) for a finished run; see :data:`OUTCOMES`.

    * ``timeout``: QEMU did not exit in time (it was shut down by ``shutdown``);
    * ``qemu-aborted``: QEMU died on a signal (abort, segfault, e.g. "failed to
      set MSR 0x10a" then an assertion), or exited with an error after it had
      started (QMP was ready);
    * ``qemu-error``: QEMU refused the configuration and exited at start-up
      (unknown CPU model, bad option, missing kernel);
    * ``qmp-error``: QEMU ran but a QMP query failed;
    * ``probe-failed``: QEMU exited normally but the probe did not report
      completely (or reported failure);
    * ``ok``: the probe reported (or, query-only, the queries succeeded).
    """
    err = error_line(stderr)
    if timed_out:
        limit = f" {timeout:g} s" if timeout is not None else ""
        how = f"; stopped by {shutdown}" if shutdown else ""
        return Outcome.TIMEOUT, f"QEMU did not exit within{limit}{how}"
    if exit_code is None:
        return Outcome.QEMU_ABORTED, "QEMU exit status unknown"
    if exit_code < 0:
        try:
            sig = signal.Signals(-exit_code).name
        except ValueError:
            sig = f"signal {-exit_code}"
        return Outcome.QEMU_ABORTED, f"QEMU killed by {sig}" + (f": {err}" if err else "")
    if not qmp_ready and exit_code != 0 and exit_code not in (PROBE_EXIT_OK, PROBE_EXIT_FAIL):
        return Outcome.QEMU_ERROR, err or f"QEMU exited with status {exit_code} at start-up"
    if qmp_error:
        if exit_code not in (0, PROBE_EXIT_OK, PROBE_EXIT_FAIL):
            return Outcome.QEMU_ABORTED, err or f"QEMU exited with status {exit_code} during QMP ({qmp_error})"
        return Outcome.QMP_ERROR, qmp_error
    if query_only:
        if exit_code == 0:
            return Outcome.OK, "QMP queries done"
        return Outcome.QEMU_ABORTED, err or f"QEMU exited with status {exit_code}"
    if exit_code not in (0, PROBE_EXIT_OK, PROBE_EXIT_FAIL):
        return Outcome.QEMU_ABORTED, err or f"QEMU exited with status {exit_code} before the probe reported"
    verdict = (probe_check or exit_code_check)(serial_text, exit_code)
    if verdict.complete:
        return Outcome.OK, verdict.message or "probe reported"
    return Outcome.PROBE_FAILED, verdict.message or "probe did not report"


# ---------------------------------------------------------------------------
# command preparation


def cpu_model_name(cpu: str | None) -> str | None:
    """``"EPYC-Rome,-avx2"`` -> ``"EPYC-Rome"``."""
    if not cpu:
        return None
    return cpu.split(",", 1)[0].strip() or None


def _prepare(command: Any, sock: Path | None, serial_path: Path, paused: bool) -> list[str]:
    """argv with the rig's QMP socket (none when ``sock`` is None), serial log and ``-S`` filled in."""
    fields = {f.name for f in dataclasses.fields(command)} if dataclasses.is_dataclass(command) else set()
    changes: dict[str, Any] = {}
    if "qmp" in fields:
        changes["qmp"] = str(sock) if sock is not None else None
    if "serial" in fields:
        changes["serial"] = str(serial_path)
    if changes:
        command = dataclasses.replace(command, **changes)
    argv = list(command.argv())
    if "qmp" not in fields and sock is not None:
        argv += ["-qmp", f"unix:{sock}"]
    if "serial" not in fields and "-serial" not in argv:
        argv += ["-serial", f"file:{serial_path}"]
    if paused and "-S" not in argv:
        argv.append("-S")
    return argv


def _qmp_mode(argv: list[str]) -> str:
    """``accept`` when QEMU connects to us (client), ``connect`` when it is the server."""
    for i, a in enumerate(argv[:-1]):
        if a in ("-qmp", "-chardev") and "server" in argv[i + 1] and "server=off" not in argv[i + 1]:
            return "connect"
    return "accept"


def _cpu_from_argv(argv: list[str]) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a == "-cpu":
            return argv[i + 1]
    return None


# ---------------------------------------------------------------------------
# the launch


class _Run:
    """State of one launch; methods are the steps of the flow."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.proc: QemuProcess | None = None
        self.client: QMPClient | None = None
        self.session: QmpSession | None = None
        self.connected = False  # QMP greeting received
        self.qmp_ready = False  # qmp_capabilities answered: QEMU's main loop runs (start-up is over)
        self.qmp_error: str | None = None
        self.shutdown_by = ""
        self.timings: dict[str, float] = {}

    def _mark(self, what: str, t0: float) -> None:
        self.timings[what] = round((time.perf_counter() - t0) * 1000, 3)

    async def connect(self, sock: Path, mode: str, deadline: float) -> None:
        assert self.proc is not None and self.client is not None
        died = asyncio.ensure_future(self.proc.wait_async())
        try:
            if mode == "accept":
                fut = asyncio.ensure_future(self.client.accept())
            else:
                fut = asyncio.ensure_future(self._connect_retry(sock, deadline))
            done, _ = await asyncio.wait({fut, died}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if fut not in done:
                fut.cancel()
                with contextlib.suppress(BaseException):
                    await fut
                if died in done:
                    return  # QEMU exited before QMP: classified from its status
                raise TimeoutError
            exc = fut.exception()
            if exc is not None:
                if await self._exited_within(QUIT_GRACE):
                    return  # QEMU exited during the handshake (e.g. an unknown -cpu model): its status says why
                if isinstance(exc, QMPError | OSError | EOFError):
                    raise exc
                # qemu.qmp asserts on its own state when the peer goes away mid-handshake
                raise ConnectionError(f"QMP handshake failed ({type(exc).__name__}: {exc})") from exc
            self.connected = True
        finally:
            if not died.done():
                died.cancel()

    async def _connect_retry(self, sock: Path, deadline: float) -> None:
        assert self.client is not None
        delay = 0.002
        while True:
            try:
                await self.client.connect(str(sock))
                return
            except QMPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    async def queries(self, obs: dict[str, Any], cpu: str | None, then: str | None, ready_deadline: float,
                      deadline: float, t_spawn: float) -> None:
        """``qmp_capabilities``, the CPU queries and ``then`` (``cont``/``quit``), all sent at once:
        QEMU answers them in order as soon as its start-up is over, so a paused QEMU waits for
        nothing but its own answers (not for the rig's event loop between round trips).
        QMP is *ready* when ``qmp_capabilities`` is answered; QEMU exiting before that is
        classified from its exit status, not as a QMP failure."""
        s = self.session
        assert s is not None and isinstance(self.client, RigQMPClient)
        caps = asyncio.ensure_future(self.client.capabilities())
        seen_t = asyncio.ensure_future(s.observe_cpu(cpu_model_name(cpu), definitions=self.spec.query_definitions,
                                                     then=then))
        try:
            try:
                await asyncio.wait_for(asyncio.shield(caps), timeout=max(0.0, ready_deadline - time.monotonic()))
            except QmpFailure:
                if await self._exited_within(QUIT_GRACE):
                    return  # QEMU ended during start-up: its exit status says why
                raise
            self.qmp_ready = True
            self._mark("qmp_ready", t_spawn)
            t0 = time.perf_counter()
            seen = await asyncio.wait_for(asyncio.shield(seen_t), timeout=max(0.0, deadline - time.monotonic()))
            self._mark("queries", t0)
        finally:
            for t in (caps, seen_t):
                if not t.done():
                    t.cancel()
            await asyncio.gather(caps, seen_t, return_exceptions=True)
        obs["feature_words"] = seen.feature_words
        obs["filtered_features"] = seen.filtered_features
        if seen.expansion is not None:
            obs["expansion"] = seen.expansion.to_json()
        if seen.definitions is not None:
            obs["definitions"] = seen.definitions
        if seen.then_error is not None and not await self._exited_within(QUIT_GRACE):
            # ``cont``/``quit`` failed and QEMU still runs; QEMU exiting before it replies
            # (a guest that resets or exits at once) is not a QMP failure
            raise seen.then_error

    async def qmp_phase(self, obs: dict[str, Any], sock: Path, mode: str, cpu: str | None, then: str | None,
                        deadline: float, t_spawn: float) -> bool:
        """Connect, ask the CPU queries, then ``then``; a QMP failure goes to ``qmp_error``.  True when the
        case's deadline passed on the way."""
        try:
            ready_deadline = min(deadline, time.monotonic() + self.spec.connect_timeout)
            await self.connect(sock, mode, ready_deadline)
            self._mark("qmp_connected", t_spawn)
            if self.connected:
                await self.queries(obs, cpu, then, ready_deadline, deadline, t_spawn)
        except TimeoutError:
            if time.monotonic() >= deadline:
                return True
            self.qmp_error = "QMP did not become ready"
        except QmpFailure as e:
            self.qmp_error = str(e)
        except (QMPError, OSError, EOFError) as e:
            self.qmp_error = f"QMP connection failed: {type(e).__name__}: {e}"
        except AssertionError as e:
            # qemu.qmp asserts on its own state when QEMU goes away mid-command: QEMU's exit says why
            if not await self._exited_within(QUIT_GRACE):
                self.qmp_error = f"QMP failed (qemu.qmp: AssertionError {e})"
        return False

    async def _exited_within(self, seconds: float) -> bool:
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait_async(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def wait_exit(self, deadline: float) -> bool:
        """True when QEMU exited before the deadline."""
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait_async(), timeout=max(0.0, deadline - time.monotonic()))
            return True
        except TimeoutError:
            return False

    async def shutdown(self) -> None:
        """Escalate: QMP quit -> SIGTERM to the group -> SIGKILL to the group."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self.session is not None and self.qmp_ready:
            try:
                await asyncio.wait_for(self.session.quit(), timeout=QUIT_GRACE)
                await asyncio.wait_for(proc.wait_async(), timeout=QUIT_GRACE)
                self.shutdown_by = "QMP quit"
                return
            except (TimeoutError, QmpFailure):
                pass
        for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            self.shutdown_by = sig.name
            if grace is None:
                await proc.wait_async()
                return
            try:
                await asyncio.wait_for(proc.wait_async(), timeout=grace)
                return
            except TimeoutError:
                continue

    def kill_now(self) -> None:
        """Synchronous last resort (cancellation): SIGKILL the process group."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.shutdown_by = "SIGKILL"


async def launch(spec: LaunchSpec) -> Observation:
    """Run ``spec``; never leaves a QEMU behind (also on cancellation)."""
    t_start = time.perf_counter()
    workdir = Path(spec.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    serial_path = workdir / "serial.log"
    qmp_path = workdir / "qmp.jsonl"
    stderr_path = workdir / "stderr.log"
    rundir = make_runtime_dir()
    sock = rundir / "qmp.sock"
    # QEMU writes the serial output with one write() per character (7 KB from the probe):
    # serial.log in the work directory is a symbolic link into the runtime directory (usually
    # a tmpfs, ~2.5 ms per case less than ext4 here) until QEMU is gone, then the file itself
    live_serial = rundir / "serial.log"
    paused = spec.qmp_queries and spec.start_paused
    argv = _prepare(spec.command, sock if (spec.qmp_queries or spec.query_only) else None, serial_path,
                    paused or spec.query_only)
    (workdir / "cmdline.txt").write_text(shlex.join(argv) + "\n")
    serial_path.unlink(missing_ok=True)
    serial_path.symlink_to(live_serial)
    run = _Run(spec)
    obs: dict[str, Any] = {}
    timed_out = False
    deadline = time.monotonic() + spec.timeout
    want_qmp = spec.qmp_queries or spec.query_only
    mode = _qmp_mode(argv)
    with open(qmp_path, "w") as qmp_file, open(stderr_path, "wb") as err_file:
        try:
            if want_qmp:
                run.client = RigQMPClient(spec.name, negotiate=False)
                run.session = QmpSession(run.client, Transcript(qmp_file, t_start))
                if mode == "accept":
                    await run.client.start_server(str(sock))
            t0 = time.perf_counter()
            try:
                run.proc = _start(argv, err_file)
            except OSError as e:
                if spec.started is not None:
                    spec.started.set()
                err_file.write(f"cannot start {argv[0]}: {e.strerror}\n".encode())
                err_file.flush()
                settle_serial(live_serial, serial_path)
                return _observation(spec, argv, None, Outcome.QEMU_ERROR, f"cannot start {argv[0]}: {e.strerror}",
                                    serial_path, qmp_path, stderr_path, obs, t_start, run)
            run._mark("spawn", t0)
            if spec.started is not None:
                spec.started.set()
            if want_qmp:
                then = "quit" if spec.query_only else ("cont" if paused else None)
                timed_out = await run.qmp_phase(obs, sock, mode, _cpu_from_argv(argv), then, deadline, t0)
            if not timed_out and not await run.wait_exit(deadline):
                timed_out = True
            if timed_out or (run.qmp_error and run.proc.returncode is None):
                await run.shutdown()
            run._mark("exit", t0)
        except BaseException:
            run.kill_now()
            if run.proc is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(run.proc.wait_async())
            raise
        finally:
            if run.client is not None:
                with contextlib.suppress(Exception):
                    await run.client.disconnect()
            settle_serial(live_serial, serial_path)
            remove_runtime_dir(rundir)
    exit_code = run.proc.returncode if run.proc else None
    stderr = stderr_path.read_text(errors="replace")
    serial_text = serial_path.read_text(errors="replace") if serial_path.exists() else ""
    outcome, message = _classify_run(run, exit_code, timed_out, want_qmp, stderr, serial_text)
    return _observation(spec, argv, exit_code, outcome, message, serial_path, qmp_path, stderr_path, obs,
                        t_start, run, stderr=stderr, serial_text=serial_text)


def _classify_run(run: _Run, exit_code: int | None, timed_out: bool, want_qmp: bool, stderr: str,
                  serial_text: str) -> tuple[Outcome, str]:
    spec = run.spec
    # after our shutdown of a QEMU whose QMP failed, the exit status is ours; QMP failing is the finding
    code = 0 if run.qmp_error and run.shutdown_by else exit_code
    return classify(
        exit_code=code, timed_out=timed_out, qmp_ready=run.qmp_ready or not want_qmp,
        qmp_error=run.qmp_error, stderr=stderr, serial_text=serial_text, query_only=spec.query_only,
        probe_check=spec.probe_check, timeout=spec.timeout, shutdown=run.shutdown_by,
    )


def _observation(spec: LaunchSpec, argv: list[str], exit_code: int | None, outcome: Outcome, message: str,
                 serial_path: Path, qmp_path: Path, stderr_path: Path, obs: dict[str, Any], t_start: float,
                 run: _Run, *, stderr: str | None = None, serial_text: str = "") -> Observation:
    if stderr is None:
        stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    return Observation(
        argv=argv,
        exit_code=exit_code,
        outcome=outcome,
        serial_path=serial_path if serial_path.exists() else None,
        serial_text=serial_text,
        qmp_transcript_path=qmp_path if qmp_path.exists() else None,
        stderr=stderr,
        feature_words=obs.get("feature_words"),
        filtered_features=obs.get("filtered_features"),
        expansion=obs.get("expansion"),
        duration_s=time.perf_counter() - t_start,
        message=message,
        definitions=obs.get("definitions"),
        timings_ms=dict(run.timings),
    )


def launch_sync(spec: LaunchSpec) -> Observation:
    """:func:`launch` in a fresh event loop (Ctrl-C cancels it and kills QEMU)."""
    return asyncio.run(launch(spec))
