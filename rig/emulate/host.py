"""An emulated host: a Debian kernel with real KVM, booted as an L1 guest under TCG.

::

    with EmulatedHost("EPYC-Rome", "6.12", {"kvm_amd.npt": "0"}) as host:
        host.profile                      # HostProfile (source "emulated")
        r = host.run_l2(probe_args("EPYC-Rome,-avx2"), timeout=60, qmp=True)
        r.exit_status, r.serial, r.report(), r.feature_words()

Boot: the outer QEMU (TCG, ``-cpu MODEL``, one vCPU) starts the L1 image of
rig/images/l1.py with the module parameters on the kernel command line.  L1's
ttyS0 (console) goes to ``console.log`` in the work directory; ttyS1 is the
data channel, a Unix socket the rig listens on (QEMU connects as a client),
carrying framed sections (rig/emulate/frames.py) out and commands in
(guests/l1/init).  The profile arrives right after the modules are loaded;
then L1 waits for ``run`` commands, one L2 QEMU at a time, until ``quit``.

Every wait has a deadline: a kernel that hangs at boot (seen with -cpu
Opteron_G4/G5 under 6.12), an L2 that hangs, or L1 dying, ends in an
:class:`EmulateError` naming what did not happen and the last console line;
the outer QEMU's process group is always killed on the way out.
"""

from __future__ import annotations

import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..caseaxes import EmulatedHostSpec, params_label, parse_emulated
from ..caseaxes import parse_params as _parse_params
from ..errors import RigError
from ..host.profile import HostProfile, QemuBinary
from ..images.l1 import L1_QEMU, L1Image, l1_image_for, load_recipe
from ..qemu.process import QemuProcess
from .frames import Frame, FrameError, FrameReader
from .l1profile import parse_profile
from .l2 import L2Result, parse_qmp_section, probe_args

#: the L2 "machine" that is no QEMU at all: the probe under L1's kvmrun (guests/l1/kvmrun.c)
KVMRUN_MACHINE = "kvmrun"
#: seconds the rig waits beyond an L2 case's own timeout (L1 kills L2 at the timeout)
L2_MARGIN = 30.0
#: times an L2 case is sent when L1 reports its arguments arrived garbled (nothing ran then)
L2_SEND_ATTEMPTS = 3


class EmulateError(RigError):
    pass


class L1BootTimeout(EmulateError):
    pass


#: the typed ``emulated:`` host (parsed once, at matrix load: rig.caseaxes)
HostSpec = EmulatedHostSpec


def parse_params(items: list[str] | tuple[str, ...] | Mapping[str, str] | None) -> dict[str, str]:
    """``["kvm_amd.npt=0", "nested=0"]`` -> ``{"kvm_amd.npt": "0", "kvm_amd.nested": "0"}``
    (:func:`rig.caseaxes.parse_params`; errors are :class:`EmulateError`)."""
    return _parse_params(items, EmulateError)


def parse_host_spec(spec: str) -> EmulatedHostSpec:
    """``[emulated:]MODEL@KERNEL[,param=value...]`` (as in a matrix ``host =``) -> :class:`EmulatedHostSpec`."""
    return parse_emulated(spec, EmulateError)


@dataclass
class BootInfo:
    release: str
    insmod: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0
    l1_uptime: float | None = None


class EmulatedHost:
    """Context manager: boots L1 on enter, powers it off on exit.

    ``cpu``: the outer QEMU's -cpu model for L1 (an AMD model with SVM:
    EPYC, EPYC-Rome, EPYC-Milan, max, ...); ``kernel``: a Debian kernel
    request ("6.1", "6.12", "7.x", "newest", a full release); ``params``:
    KVM module parameters (``{"kvm_amd.npt": "0"}`` or ``["npt=0"]``);
    ``l2=False`` boots the profile-only image (no QEMU inside; faster, no
    :meth:`run_l2`).
    """

    def __init__(
        self,
        cpu: str,
        kernel: str = "newest",
        params: Mapping[str, str] | list[str] | None = None,
        *,
        image: L1Image | None = None,
        workdir: Path | None = None,
        boot_timeout: float | None = None,
        memory: str | None = None,
        qemu: str = "system",
        keep_workdir: bool = False,
        l2: bool = True,
    ) -> None:
        recipe = load_recipe()
        self.cpu = cpu
        self.kernel = kernel
        self.params = parse_params(params)
        self.boot = recipe.boot
        self.boot_timeout = float(boot_timeout or self.boot["boot_timeout"])
        self.l2 = l2
        self.memory = memory or str(self.boot["memory"] if l2 else self.boot["memory_profile_only"])
        self.qemu_request = qemu
        self._image = image
        self._workdir_given = workdir
        self._keep = keep_workdir
        self.workdir: Path | None = None
        self.profile: HostProfile | None = None
        self.info: BootInfo | None = None
        self._proc: QemuProcess | None = None
        self._sock: socket.socket | None = None
        self._reader = FrameReader()
        self._frames: list[Frame] = []
        self._case = 0
        self._failed = False
        self._outer_version: str | None = None

    @classmethod
    def from_spec(cls, spec: str | EmulatedHostSpec, **kwargs) -> EmulatedHost:
        """``EmulatedHost.from_spec("emulated:EPYC-Rome@6.12,npt=0")`` (or the parsed spec); kwargs as for the
        constructor."""
        h = spec if isinstance(spec, EmulatedHostSpec) else parse_host_spec(spec)
        return cls(h.cpu, h.kernel, h.params, **kwargs)

    # -- naming ------------------------------------------------------------
    @property
    def label(self) -> str:
        """``EPYC-Rome@6.12`` or ``EPYC-Rome@6.12,npt=0`` (release series once booted)."""
        series = self._image.series if self._image else self.kernel
        p = params_label(self.params)
        return f"{self.cpu}@{series}" + (f",{p}" if p else "")

    @property
    def outer_qemu_version(self) -> str | None:
        """The version of the QEMU that runs L1 (known once it started)."""
        return self._outer_version

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> EmulatedHost:
        try:
            self.start()
        except BaseException:
            self._failed = True
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._failed = True
        self.close()

    def _outer_qemu(self) -> list[str]:
        from ..images.qemu import fetch_qemu

        q = fetch_qemu(self.qemu_request)
        self._outer_version = q.version
        return q.argv_prefix()

    def command(self, image: L1Image, sock: Path, console: Path) -> list[str]:
        """The outer QEMU command line that boots L1."""
        append = " ".join([str(self.boot["cmdline"]), *(f"{k}={v}" for k, v in sorted(self.params.items()))])
        return [
            *self._outer_qemu(),
            "-M", str(self.boot["machine"]), "-accel", "tcg", "-cpu", self.cpu, "-m", self.memory, "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(image.vmlinuz), "-initrd", str(image.initrd), "-append", append,
            "-serial", f"file:{console}",
            "-chardev", f"socket,id=rigdata,path={sock}", "-serial", "chardev:rigdata",
        ]

    def start(self) -> None:
        t0 = time.monotonic()
        image = self._image = self._image or l1_image_for(self.kernel, with_qemu=self.l2)
        if self._workdir_given is not None:
            self.workdir = Path(self._workdir_given)
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="rig-l1-"))
        sock_path = self.workdir / "data.sock"
        sock_path.unlink(missing_ok=True)
        console = self.workdir / "console.log"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(sock_path))
            listener.listen(1)
            argv = self.command(image, sock_path, console)
            try:
                # like every QEMU the rig starts: its own process group, SIGKILL when the rig dies
                self._proc = QemuProcess.start(argv, stderr=self.workdir / "qemu-stderr.log",
                                               cmdline=self.workdir / "cmdline.txt", serial=console)
            except OSError as e:
                raise EmulateError(f"cannot start {argv[0]}: {e.strerror}", hint="install qemu-system-x86") from e
            self._sock = self._accept(listener, t0 + 30)
        finally:
            listener.close()
            sock_path.unlink(missing_ok=True)
        self._sock.setblocking(False)
        boot = self._wait_frame("boot", t0 + self.boot_timeout, "L1 did not start its init")
        up = dict(line.split(" ", 1) for line in boot.lines if " " in line)
        insmod = self._wait_frame("insmod", t0 + self.boot_timeout, "L1 did not load the KVM modules")
        prof = self._wait_frame("profile", t0 + self.boot_timeout, "L1 did not report its host profile")
        self.info = BootInfo(
            release=image.release, insmod=list(insmod.lines), boot_seconds=time.monotonic() - t0,
            l1_uptime=int(up["uptime"]) / 100 if up.get("uptime", "").isdigit() else None,
        )
        self.profile = self._make_profile(prof, image)

    def reload(self, params: Mapping[str, str] | list[str] | None = None, timeout: float = 120) -> HostProfile:
        """Unload the KVM modules in L1 and load them again with ``params``; return the new profile.

        KVM computes its supported CPUID when the vendor module initialises, so
        this gives the same answer as a fresh boot with those parameters, in a
        fraction of the time (the oracle matrix boots each kernel × model once).
        """
        if self._sock is None or self.profile is None or self.info is None or self._image is None:
            raise EmulateError("emulated host is not running", hint="use reload inside the `with EmulatedHost(...)` block")
        new = parse_params(params)
        for k, v in new.items():
            if any(c.isspace() for c in k + v):
                raise EmulateError(f"KVM parameter {k}={v!r} contains white space")
        t0 = time.monotonic()
        self._send(("reload\n" + "".join(f"{k}={v}\n" for k, v in sorted(new.items())) + "\n").encode())
        deadline = t0 + timeout
        insmod = self._wait_frame("insmod", deadline, "L1 did not reload the KVM modules", timeout)
        prof = self._wait_frame("profile", deadline, "L1 did not report its host profile after reloading", timeout)
        self.params = new
        self.info.insmod = list(insmod.lines)
        self.profile = self._make_profile(prof, self._image)
        self.profile.notes["emulated"]["reloaded"] = True
        self.profile.notes["emulated"]["reload_seconds"] = round(time.monotonic() - t0, 2)
        return self.profile

    def _make_profile(self, frame: Frame, image: L1Image) -> HostProfile:
        p = parse_profile(frame.lines, name=f"emulated:{self.label}")
        p.qemu = [QemuBinary(path=f"{L1_QEMU} (in L1)", version=image.qemu_version)] if image.with_qemu else []
        failed = [line for line in self.info.insmod if line.startswith("fail ")] if self.info else []
        for line in failed:
            p.missing.append(f"insmod in L1: {line.removeprefix('fail ')}")
        p.notes["emulated"] = {
            "cpu": self.cpu,
            "kernel_request": self.kernel,
            "release": image.release,
            "series": image.series,
            "params": dict(self.params),
            "outer_qemu": self._outer_version,
            "outer_accel": "tcg",
            "l1_machine": self.boot["machine"],
            "l1_memory": self.memory,
            "l2_qemu": image.qemu_version,
            "image": image.digest,
            "insmod": list(self.info.insmod) if self.info else [],
            "boot_seconds": round(self.info.boot_seconds, 2) if self.info else None,
        }
        return p

    def close(self) -> None:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            if proc is not None and proc.poll() is None:
                try:
                    sock.setblocking(True)
                    sock.settimeout(2)
                    sock.sendall(b"quit\n")
                except OSError:
                    pass
            sock.close()
        if proc is not None:
            try:
                proc.wait(timeout=10 if not self._failed else 0.1)
            except subprocess.TimeoutExpired:
                pass
            proc.stop()
        if self.workdir is not None and self._workdir_given is None and not self._keep and not self._failed:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- data channel --------------------------------------------------------
    def _accept(self, listener: socket.socket, deadline: float) -> socket.socket:
        listener.settimeout(0.2)
        while True:
            try:
                conn, _ = listener.accept()
                return conn
            except TimeoutError:
                pass
            if self._proc is not None and self._proc.poll() is not None:
                raise EmulateError(f"QEMU for L1 (-cpu {self.cpu}) exited at start: {self._stderr_line()}",
                                   hint="check the -cpu model name (qemu-system-x86_64 -cpu help)")
            if time.monotonic() > deadline:
                raise EmulateError("QEMU for L1 did not connect its data channel within 30 s")

    def _stderr_line(self) -> str:
        try:
            lines = (self.workdir / "qemu-stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"exit status {self._proc.returncode if self._proc else '?'}"

    def console_tail(self, n: int = 3) -> str:
        try:
            lines = [s for s in (self.workdir / "console.log").read_text(errors="replace").splitlines() if s.strip()]
        except OSError:
            return "(no console output)"
        return " | ".join(lines[-n:]) if lines else "(no console output)"

    def _fail(self, what: str, timeout: bool = False) -> EmulateError:
        self._failed = True
        where = f"L1 Linux {self._image.release if self._image else self.kernel} under TCG -cpu {self.cpu}"
        cls = L1BootTimeout if timeout else EmulateError
        hint = f"full console log in {self.workdir / 'console.log'}"
        if timeout and self.profile is None:
            hint = ("some kernels hang at boot under some TCG CPU models (seen: 6.12 with Opteron_G4/G5); "
                    f"try another --cpu or a longer --boot-timeout; {hint}")
        return cls(f"{where}: {what}; last console lines: {self.console_tail()}", hint=hint)

    def _qemu_gone(self, what: str) -> EmulateError:
        """The data channel closed: QEMU exited (bad option, crash) or L1 powered off."""
        rc = None
        if self._proc is not None:
            try:
                rc = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rc = None
        if rc:
            self._failed = True
            err = self._stderr_line()
            hint = "check the -cpu model name (qemu-system-x86_64 -cpu help)" if "CPU model" in err else \
                f"QEMU's messages are in {self.workdir / 'qemu-stderr.log'}"
            return EmulateError(f"QEMU for L1 (-cpu {self.cpu}) exited with status {rc}: {err}", hint=hint)
        return self._fail(f"{what}: L1 stopped (QEMU exit status {rc})")

    def _wait_frame(self, name: str, deadline: float, what: str, budget: float | None = None) -> Frame:
        budget = self.boot_timeout if budget is None else budget
        while True:
            for i, f in enumerate(self._frames):
                if f.name == name:
                    del self._frames[i]
                    return f
                if f.name == "error":
                    del self._frames[i]
                    raise self._fail(f"L1 reported an error: {' '.join(f.lines)}")
            if self._sock is None:
                raise EmulateError("emulated host is not running", hint="use it inside its `with` block")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"{what} within {budget:.0f} s (timed out)", timeout=True)
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError as e:
                raise self._fail(f"data channel failed ({e.strerror})") from e
            if data == b"" or (data is None and self._proc is not None and self._proc.poll() is not None):
                raise self._qemu_gone(what)
            if data is None:
                select.select([self._sock], [], [], min(0.2, max(remaining, 0.01)))
                continue
            with open(self.workdir / "data.log", "ab") as log:
                log.write(data)
            try:
                self._frames.extend(self._reader.feed(data))
            except FrameError as e:
                raise self._fail(str(e)) from e

    # -- L2 ------------------------------------------------------------------
    def run_l2(self, qemu_args: list[str], timeout: float | None = None, *, qmp: bool = False,
               program: str = "qemu") -> L2Result:
        """Run one L2 QEMU in L1 with ``qemu_args`` (see rig/emulate/l2.py for what L1 adds).

        ``timeout``: L1 kills the L2 QEMU after this many seconds (exit status
        137, ``timed_out``).  ``qmp``: start paused and read QEMU's configured
        CPUID over QMP first (``feature_words()``, ``filtered_features()``).
        ``program="kvmrun"``: instead of QEMU, L1's ``kvmrun`` boots the probe in a
        bare KVM VM whose CPUID is exactly KVM_GET_SUPPORTED_CPUID (guests/l1/kvmrun.c;
        ``qemu_args`` are kvmrun's arguments after the probe, e.g. the memory in MiB).
        """
        if program not in ("qemu", "kvmrun") or (program == "kvmrun" and qmp):
            raise EmulateError(f"L2 program {program!r}{' with QMP' if qmp else ''} is not one of qemu, kvmrun "
                               "(kvmrun has no QMP)")
        if self._sock is None or self.profile is None:
            raise EmulateError("emulated host is not running", hint="use run_l2 inside the `with EmulatedHost(...)` block")
        if self._image is not None and not self._image.with_qemu:
            raise EmulateError("this emulated host was booted without QEMU (l2=False)", hint="boot it with l2=True")
        if self.profile.kvm.supported is None:
            raise EmulateError(f"no KVM in L1 ({self.profile.kvm.error or 'modules did not load'})",
                               hint="pick a -cpu model with SVM (EPYC*, max) for L1")
        tmo = int(timeout if timeout is not None else self.boot["l2_timeout"])
        if tmo < 1:
            raise EmulateError(f"L2 timeout {timeout!r} must be at least 1 s")
        for a in qemu_args:
            if not a or "\n" in a or "\r" in a:
                raise EmulateError(f"L2 QEMU argument {a!r}: empty arguments and line breaks cannot be passed to L1")
        verb = "run" if program == "qemu" else "kvmrun"
        body = "".join(a + "\n" for a in qemu_args).encode()
        budget = tmo + L2_MARGIN
        garbled: list[str] = []
        while True:
            self._case += 1
            cid = self._case
            t0 = time.monotonic()
            deadline = t0 + budget
            self._send(f"{verb} {cid} {tmo} {1 if qmp else 0} {len(body)}\n".encode() + body + b"\n")
            ack = self._wait_frame(f"case/{cid}/args", deadline, f"L2 case {cid} was not acknowledged", budget)
            if not ack.lines or not ack.lines[0].startswith("garbled"):
                break
            # L1 received other argument bytes than sent (the serial line lost some): nothing ran; send again
            garbled.append(ack.lines[0])
            if len(garbled) >= L2_SEND_ATTEMPTS:
                raise self._fail(f"L2 case arguments garbled on the data channel {len(garbled)} times "
                                 f"({'; '.join(garbled)})")
        replies: dict = {}
        errors: list[str] = []
        if qmp:
            q = self._wait_frame(f"case/{cid}/qmp", deadline, f"L2 case {cid} sent no QMP answer", budget)
            replies, errors = parse_qmp_section(q.lines)
        serial = self._wait_frame(f"case/{cid}/serial", deadline, f"L2 case {cid} did not finish", budget)
        stderr = self._wait_frame(f"case/{cid}/stderr", deadline, f"L2 case {cid} did not finish", budget)
        meta = self._wait_frame(f"case/{cid}/meta", deadline, f"L2 case {cid} did not finish", budget)
        m = dict(line.split(" ", 1) for line in meta.lines if " " in line)
        return L2Result(
            case_id=cid, args=list(qemu_args), exit_status=int(m.get("exit", "-1")), timeout=tmo,
            serial=serial.text, stderr=stderr.text, l1_seconds=int(m.get("cs", "0")) / 100,
            wall_seconds=time.monotonic() - t0, qmp=replies, qmp_errors=errors,
        )

    def run_probe(self, cpu: str, machine: str = "microvm", *, timeout: float | None = None, qmp: bool = True,
                  extra: tuple[str, ...] = ()) -> L2Result:
        """Boot the rig's PVH probe as L2 with ``-cpu cpu`` (machine ``kvmrun``: without QEMU, ``cpu`` must
        be ``host``: KVM's supported CPUID passed through as it is)."""
        if machine == KVMRUN_MACHINE:
            if cpu != "host" or extra:
                raise EmulateError(f"L2 machine kvmrun runs -cpu host only (KVM's bits as they are), not {cpu!r}"
                                   + (f" with {' '.join(extra)}" if extra else ""),
                                   hint="use microvm for QEMU CPU models and flags")
            return self.run_l2([], timeout, program="kvmrun")
        return self.run_l2(probe_args(cpu, machine, extra=extra), timeout, qmp=qmp)

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.setblocking(True)
        self._sock.settimeout(10)
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise self._fail(f"cannot send to L1 ({e})") from e
        finally:
            self._sock.setblocking(False)
