"""Full-OS guests over SSH: boot a disk image under QEMU, log in with paramiko, observe.

:class:`SshGuest` is one guest definition: the rig's own image
(``rig images build ssh``, a directory with ``image.json``) or a user's disk
image (qcow2/raw with its own bootloader) plus the login to use::

    guest = SshGuest(image)                                   # the rig's image: everything recorded
    guest = SshGuest("disk.qcow2", user="debian", key="id_ed25519", host_key="ssh_host_ed25519_key.pub")
    guest = SshGuest("root.img", user=..., key=..., host_key=..., kernel="vmlinuz", initrd=..., append=...)
    obs = guest.run_case(QemuCommand(machine="q35", accel="tcg", cpu="Skylake-Server"), workdir=d)
    obs.probe.tables["user"], obs.cpuinfo_flags, obs.vulnerabilities, obs.insncheck.findings

Boot: QEMU in its own process group, the disk with ``snapshot=on`` (the image
is never written), user networking with guest port 22 forwarded to a free port
on 127.0.0.1 only, serial console to ``serial.log`` in the work directory.

Login: the guest's host key must equal the recorded one (paramiko
``RejectPolicy`` with exactly that key in the known-hosts set; never
``AutoAddPolicy``).  While the guest boots, connection attempts are retried
with exponential backoff until the boot deadline; a wrong host key or a
refused key is final at once.  Every failure is a :class:`SshGuestError`
subclass with a one-line message; QEMU and the connection are always torn down
(context manager; SIGTERM then SIGKILL to QEMU's process group).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shlex
import socket
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import RigError
from ..images.ssh import SshImage
from ..qemu.cmdline import QemuCommand
from ..qemu.process import QemuProcess
from .instructions import InsnReport, classify, parse_insncheck
from .protocol import ProbeReport, parse_transcript

#: Guest memory: a Debian userland with sshd needs more than the probe's 64M.
DEFAULT_MEMORY = "512M"
#: Default deadlines (seconds): boot to login, and each command.
BOOT_TIMEOUT = 180.0
COMMAND_TIMEOUT = 60.0
#: Backoff between connection attempts while the guest boots.
RETRY_FIRST = 0.25
RETRY_MAX = 1.0
#: Where tools are uploaded in a guest that does not carry them.
UPLOAD_DIR = "/tmp/rig-tools"
PC_MACHINES = ("q35", "pc")

# paramiko logs every refused attempt while the guest boots (banner errors) as an
# error with a traceback; they are expected and reported by wait_for_login instead.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class SshGuestError(RigError):
    """Base of every ssh guest failure."""


class SshConfigError(SshGuestError):
    """The guest definition is unusable (missing key, malformed host key...)."""


class SshAuthError(SshGuestError):
    """The guest refused the rig's key."""


class SshHostKeyError(SshGuestError):
    """The guest's host key is not the recorded one: the connection was refused."""


class SshBootTimeout(SshGuestError):
    """The guest did not accept an SSH login before the boot deadline."""


class SshQemuExited(SshGuestError):
    """QEMU exited before the guest could be logged into."""


class SshCommandTimeout(SshGuestError):
    """A command in the guest did not finish in time."""


class SshCommandFailed(SshGuestError):
    """A command in the guest exited non-zero."""


# -- keys -------------------------------------------------------------------------------


_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


def parse_host_key(text: str, *, where: str = "host_key") -> tuple[str, bytes]:
    """``(type, blob)`` from a public-key line (``ssh-ed25519 AAAA... comment``) or a known_hosts line."""
    words = text.split()
    for i, w in enumerate(words[:-1]):
        if w in _KEY_TYPES:
            try:
                blob = base64.b64decode(words[i + 1], validate=True)
            except ValueError:
                break
            # The blob starts with the key type as an SSH string: cross-check.
            n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
            if blob[4:4 + n].decode(errors="replace") != w:
                raise SshConfigError(f"{where}: key data does not match its type {w}")
            return w, blob
    raise SshConfigError(f"{where}: not an SSH public key line ({', '.join(_KEY_TYPES[:2])}, ... followed by base64)")


def read_host_key(value: str | Path, *, where: str = "host_key") -> tuple[str, bytes]:
    """A host key given inline or as a path to a ``.pub`` / known_hosts file."""
    s = str(value).strip()
    if not any(t in s.split() for t in _KEY_TYPES):
        p = Path(s).expanduser()
        try:
            s = p.read_text()
        except OSError as e:
            raise SshConfigError(f"{where}: {p}: cannot read: {e.strerror}") from None
        where = f"{where} {p}"
    return parse_host_key(s, where=where)


def fingerprint(blob: bytes) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_private_key(path: Path) -> Any:
    import paramiko

    try:
        return paramiko.PKey.from_path(str(path))
    except FileNotFoundError:
        raise SshConfigError(f"ssh key {path} does not exist") from None
    except OSError as e:
        raise SshConfigError(f"ssh key {path}: cannot read: {e.strerror}") from None
    except (paramiko.SSHException, ValueError) as e:
        raise SshConfigError(f"ssh key {path}: not a usable private key ({e}); passphrase-less keys only") from None


# -- guest definition -------------------------------------------------------------------


@dataclass(frozen=True)
class BootDisk:
    """How QEMU boots the guest: a disk, and a kernel when the image is the rig's."""

    disk: Path
    disk_format: str  # "raw" | "qcow2"
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    tools_dir: str | None = None  # probe-user and insncheck are already there


def _disk_format(path: Path) -> str:
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            if f.read(4) == b"QFI\xfb":
                return "qcow2"
    return "raw"


@dataclass(frozen=True)
class CommandResult:
    command: str
    status: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class SshObservation:
    """What one ssh-guest case saw (see :meth:`SshGuest.run_case`)."""

    argv: list[str]
    probe: ProbeReport
    probe_transcript: str
    cpuinfo_flags: tuple[str, ...]
    cpuinfo_bugs: tuple[str, ...]
    vulnerabilities: dict[str, str]
    kernel_messages: tuple[str, ...]
    kernel_release: str
    insncheck_output: str
    insncheck: InsnReport
    boot_to_login_s: float
    duration_s: float
    serial_path: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "kernel_release": self.kernel_release,
            "cpuinfo_flags": list(self.cpuinfo_flags),
            "cpuinfo_bugs": list(self.cpuinfo_bugs),
            "vulnerabilities": dict(self.vulnerabilities),
            "kernel_messages": list(self.kernel_messages),
            "probe_user": self.probe.tables["user"].to_json() if "user" in self.probe.tables else None,
            "insncheck": self.insncheck.to_json(),
            "boot_to_login_s": round(self.boot_to_login_s, 2),
            "duration_s": round(self.duration_s, 2),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }


@cache
def kernel_message_patterns() -> tuple[re.Pattern[str], ...]:
    text = resources.files("rig.guest").joinpath("data/kernel_messages.toml").read_text()
    return tuple(re.compile(p, re.I) for p in tomllib.loads(text)["patterns"])


_DMESG_TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")


def cpu_kernel_messages(dmesg: str) -> tuple[str, ...]:
    """The CPU-feature and mitigation lines of a kernel log (timestamps removed)."""
    pats = kernel_message_patterns()
    out = []
    for line in dmesg.splitlines():
        text = _DMESG_TS.sub("", line).strip()
        if text and any(p.search(text) for p in pats):
            out.append(text)
    return tuple(out)


def parse_cpuinfo_lists(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flags, bugs) of the first processor of /proc/cpuinfo."""
    flags: tuple[str, ...] = ()
    bugs: tuple[str, ...] = ()
    for line in text.splitlines():
        if not line.strip() and (flags or bugs):
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags" and not flags:
            flags = tuple(value.split())
        elif sep and key.strip() == "bugs" and not bugs:
            bugs = tuple(value.split())
    return flags, bugs


def parse_vulnerabilities(text: str) -> dict[str, str]:
    """``grep -H . /sys/devices/system/cpu/vulnerabilities/*`` output -> {name: verdict}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, value = line.partition(":")
        if sep:
            out[path.rsplit("/", 1)[-1]] = value.strip()
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshGuest:
    """A guest reachable over SSH: the rig's image or a user's, with the login to use."""

    def __init__(
        self,
        image: SshImage | str | Path,
        user: str | None = None,
        key: str | Path | None = None,
        host_key: str | Path | None = None,
        *,
        memory: str = DEFAULT_MEMORY,
        tools: Mapping[str, Path] | None = None,
        kernel: str | Path | None = None,
        initrd: str | Path | None = None,
        append: str | None = None,
    ) -> None:
        self.memory = memory
        self._tools = dict(tools) if tools else None
        if isinstance(image, SshImage) or (Path(image).is_dir() and (Path(image) / "image.json").exists()):
            img = image if isinstance(image, SshImage) else SshImage.load(Path(image))
            self.boot_disk = BootDisk(img.disk, "raw", img.kernel, img.initrd, img.append, img.tools_dir)
            user = user or img.user
            key = key or img.key
            host_key = host_key or img.host_key
            self.name = str(img.dir)
        else:
            p = Path(image).expanduser()
            if not p.is_file():
                raise SshConfigError(
                    f"ssh guest image {p} does not exist",
                    hint="give a disk image (qcow2/raw) or a directory made by `rig images build ssh`",
                )
            missing = [n for n, v in (("user", user), ("key", key), ("host_key", host_key)) if not v]
            if missing:
                raise SshConfigError(f"ssh guest image {p}: a user image needs {', '.join(missing)} too")
            if (initrd is not None or append is not None) and kernel is None:
                raise SshConfigError(f"ssh guest image {p}: initrd/append need a kernel")
            for what, f in (("kernel", kernel), ("initrd", initrd)):
                if f is not None and not Path(f).expanduser().is_file():
                    raise SshConfigError(f"ssh guest image {p}: {what} {f} does not exist")
            self.boot_disk = BootDisk(
                p, _disk_format(p), Path(kernel).expanduser() if kernel else None,
                Path(initrd).expanduser() if initrd else None, append,
            )
            self.name = str(p)
        assert user and key and host_key
        self.user = user
        self.key_path = Path(key).expanduser()
        self.host_key_type, self.host_key_blob = read_host_key(host_key)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, where: str = "guest", base: Path | None = None) -> SshGuest:
        """From a matrix entry ``{type = "ssh", image = ..., user = ..., key = ..., host_key = ...}``.

        ``image = "rig"`` (or no image) means the rig's own image, built on demand.
        Relative paths are taken from ``base`` (the matrix file's folder).
        """
        unknown = set(spec) - {"type", "image", "user", "key", "host_key", "memory", "kernel", "initrd", "append"}
        if unknown:
            raise SshConfigError(f"{where}: unknown ssh guest field(s) {', '.join(sorted(unknown))}")

        def path(v: Any) -> Any:
            if v is None:
                return None
            p = Path(str(v)).expanduser()
            return base / p if base is not None and not p.is_absolute() else p

        image = spec.get("image", "rig")
        if image == "rig":
            from ..images.ssh import build_default_ssh_image

            img: SshImage | Path = build_default_ssh_image()
        else:
            img = path(image)
        host_key = spec.get("host_key")
        if host_key is not None and not any(t in str(host_key).split() for t in _KEY_TYPES):
            host_key = path(host_key)
        return cls(img, spec.get("user"), path(spec.get("key")), host_key,
                   memory=str(spec.get("memory", DEFAULT_MEMORY)), kernel=path(spec.get("kernel")),
                   initrd=path(spec.get("initrd")), append=spec.get("append"))

    # -- QEMU ------------------------------------------------------------------------

    def qemu_argv(self, command: QemuCommand, port: int, serial: Path) -> list[str]:
        if command.machine not in PC_MACHINES:
            raise SshConfigError(
                f"ssh guests boot on a PC machine ({' or '.join(PC_MACHINES)}), not -M {command.machine}",
                hint="set machine = \"q35\" for ssh-guest cases",
            )
        b = self.boot_disk
        cmd = dataclasses.replace(
            command, kernel=b.kernel, initrd=b.initrd, append=b.append, drive=None, serial=serial, qmp=None,
            qmp_server=False, debug_exit=False, start_paused=False, memory=self.memory,
        )
        drive = f"file={str(b.disk).replace(',', ',,')},format={b.disk_format},if=virtio,snapshot=on"
        net = f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"
        return [*cmd.argv(), "-drive", drive, "-netdev", net, "-device", "virtio-net-pci,netdev=n0"]

    @contextlib.contextmanager
    def boot(self, command: QemuCommand, *, workdir: Path | None = None,
             boot_timeout: float = BOOT_TIMEOUT) -> Iterator[SshSession]:
        """Boot, wait for the login, yield the session; always tears both down."""
        tmp = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="rig-ssh-")
            workdir = Path(tmp.name)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        qemu = None
        session = None
        try:
            qemu, port = self._start_qemu(command, workdir)
            session = SshSession(self, qemu, port, workdir)
            session.wait_for_login(boot_timeout)
            yield session
        finally:
            if session is not None:
                session.close()
            if qemu is not None:
                qemu.stop()
            if tmp is not None:
                tmp.cleanup()

    def _start_qemu(self, command: QemuCommand, workdir: Path) -> tuple[QemuProcess, int]:
        # A free port can be taken by someone else before QEMU binds it: retry with another.
        for _attempt in range(3):
            port = free_port()
            argv = self.qemu_argv(command, port, workdir / "serial.log")
            try:
                # like every QEMU the rig starts: its own process group, and SIGKILL when the rig dies
                qemu = QemuProcess.start(argv, stderr=workdir / "stderr.log", cmdline=workdir / "cmdline.txt",
                                         serial=workdir / "serial.log")
            except OSError as e:
                raise SshQemuExited(f"cannot start {argv[0]}: {e.strerror}") from None
            time.sleep(0.05)
            text = qemu.stderr_text() if qemu.poll() is not None else ""
            if "hostfwd" in text or "host forwarding" in text:
                qemu.stop()
                continue
            return qemu, port
        raise SshQemuExited("QEMU could not forward a port on 127.0.0.1 after 3 tries: " + qemu.error_line())

    def run_case(self, command: QemuCommand, *, workdir: Path | None = None, boot_timeout: float = BOOT_TIMEOUT,
                 command_timeout: float = COMMAND_TIMEOUT, tests: list[str] | None = None) -> SshObservation:
        """Boot with ``command``'s CPU/machine/accel, log in and collect everything (see module doc)."""
        t0 = time.monotonic()
        with self.boot(command, workdir=workdir, boot_timeout=boot_timeout) as s:
            return s.observe(command_timeout=command_timeout, tests=tests, accel=command.accel, t0=t0)


class SshSession:
    """A logged-in paramiko connection to a booted guest (made by :meth:`SshGuest.boot`)."""

    def __init__(self, guest: SshGuest, qemu: QemuProcess, port: int, workdir: Path) -> None:
        self.guest = guest
        self.qemu = qemu
        self.port = port
        self.workdir = workdir
        self.client: Any = None
        self.boot_to_login_s: float | None = None
        self.attempts = 0

    # -- connecting ------------------------------------------------------------------

    def connect_once(self, *, user: str | None = None, key: Any = None, host_key: tuple[str, bytes] | None = None,
                     timeout: float = 10.0) -> Any:
        """One login attempt; returns a connected ``paramiko.SSHClient``.

        Raises :class:`SshHostKeyError` / :class:`SshAuthError` (final), or
        ``OSError``/``paramiko.SSHException``/``EOFError`` for "not up yet".
        """
        import paramiko

        ktype, blob = host_key or (self.guest.host_key_type, self.guest.host_key_blob)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        host_id = f"[127.0.0.1]:{self.port}"
        client.get_host_keys().add(host_id, ktype, paramiko.PKey.from_type_string(ktype, blob))
        pkey = key if key is not None else load_private_key(self.guest.key_path)
        try:
            client.connect(
                "127.0.0.1", port=self.port, username=user or self.guest.user, pkey=pkey, look_for_keys=False,
                allow_agent=False, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except paramiko.BadHostKeyException as e:
            client.close()
            raise SshHostKeyError(
                f"guest at {host_id} presented host key {e.key.get_name()} {fingerprint(e.key.asbytes())},"
                f" not the recorded {ktype} {fingerprint(blob)}: connection refused",
                hint="rebuild the image or give the guest's real host_key",
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise SshAuthError(
                f"guest at {host_id} refused login as {user or self.guest.user!r} with key"
                f" {fingerprint(pkey.asbytes())}: {e}",
                hint="check user and key: the public key must be in the guest's authorized_keys",
            ) from None
        except paramiko.SSHException as e:
            client.close()
            if "not found in known_hosts" in str(e):
                raise SshHostKeyError(
                    f"guest at {host_id} offers no {ktype} host key (the recorded key's type): connection refused",
                    hint="give the guest's real host_key",
                ) from None
            raise
        except BaseException:
            client.close()
            raise
        return client

    def wait_for_login(self, boot_timeout: float) -> None:
        """Retry the login with backoff while the guest boots, bounded by ``boot_timeout``."""
        import paramiko

        key = load_private_key(self.guest.key_path)
        deadline = self.qemu.started + boot_timeout
        delay = RETRY_FIRST
        last = "no attempt"
        while True:
            rc = self.qemu.poll()
            if rc is not None:
                raise SshQemuExited(f"QEMU exited (status {rc}) before the guest accepted SSH: "
                                    f"{self.qemu.error_line()}; serial: {self.qemu.serial_tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                kvm = " (under KVM: Linux guests hang on PVM-style KVM hosts, which do not intercept CPUID; try accel tcg)" \
                    if "-accel" in self.qemu.argv and "kvm" in self.qemu.argv[self.qemu.argv.index("-accel") + 1] \
                    else ""
                raise SshBootTimeout(
                    f"guest did not accept SSH within {boot_timeout:g} s ({self.attempts} attempt"
                    f"{'' if self.attempts == 1 else 's'}, last: {last});"
                    f" serial: {self.qemu.serial_tail()}{kvm}",
                    hint=f"see {self.qemu.serial_path}",
                )
            self.attempts += 1
            try:
                self.client = self.connect_once(key=key, timeout=max(1.0, min(10.0, left)))
                self.boot_to_login_s = time.monotonic() - self.qemu.started
                return
            except (OSError, EOFError, paramiko.SSHException) as e:
                last = _not_up_reason(e)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX)

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None

    # -- commands --------------------------------------------------------------------

    def run(self, command: str, *, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None,
            check: bool = True) -> CommandResult:
        """Run ``command`` in the guest; a :class:`SshCommandTimeout` after ``timeout`` seconds."""
        if self.client is None:
            raise SshGuestError("not logged in")
        t0 = time.monotonic()
        transport = self.client.get_transport()
        chan = transport.open_session(timeout=timeout)
        try:
            chan.settimeout(timeout)  # bounds exec and stdin; reads below only take what is ready
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                # sshd may send exit-status before the last output: done only after EOF too
                if chan.exit_status_ready() and (chan.eof_received or chan.closed) and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if time.monotonic() - t0 > timeout:
                    raise SshCommandTimeout(f"command {command!r} did not finish within {timeout:g} s in the guest")
                if not transport.is_active():
                    raise SshGuestError(f"connection to the guest dropped during {command!r}")
                if not got:
                    time.sleep(0.01)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        res = CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"),
                            time.monotonic() - t0)
        if check and status != 0:
            msg = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["(no output)"])[-1]
            raise SshCommandFailed(f"command {command!r} exited {status} in the guest: {msg[:200]}")
        return res

    def upload(self, data: bytes, path: str, mode: int = 0o755) -> None:
        q = shlex.quote(path)
        self.run(f"mkdir -p {shlex.quote(os.path.dirname(path))} && cat > {q} && chmod {mode:o} {q}", stdin=data)

    def tool_paths(self) -> tuple[str, str]:
        """Guest paths of (probe-user, insncheck); uploads them when the image does not carry them."""
        b = self.guest.boot_disk
        if b.tools_dir and not self.guest._tools:
            return f"{b.tools_dir}/probe-user", f"{b.tools_dir}/insncheck"
        tools = self.guest._tools or default_tools()
        for name in ("probe-user", "insncheck"):
            self.upload(Path(tools[name]).read_bytes(), f"{UPLOAD_DIR}/{name}")
        return f"{UPLOAD_DIR}/probe-user", f"{UPLOAD_DIR}/insncheck"

    def observe(self, *, command_timeout: float = COMMAND_TIMEOUT, tests: list[str] | None = None,
                accel: str = "tcg", t0: float | None = None) -> SshObservation:
        t0 = self.qemu.started if t0 is None else t0
        timings: dict[str, float] = {}

        def timed(name: str, cmd: str, check: bool = True) -> CommandResult:
            r = self.run(cmd, timeout=command_timeout, check=check)
            timings[name] = r.seconds
            return r

        probe_path, insn_path = self.tool_paths()
        sudo = "" if self.guest.user == "root" else "sudo -n "
        probe_out = timed("probe", shlex.quote(probe_path)).stdout
        probe = parse_transcript(probe_out, case=f"ssh:{self.guest.name}")
        flags, bugs = parse_cpuinfo_lists(timed("cpuinfo", "cat /proc/cpuinfo").stdout)
        vulns = parse_vulnerabilities(timed("vulnerabilities", "grep -H . /sys/devices/system/cpu/vulnerabilities/*",
                                            check=False).stdout)
        dmesg = timed("dmesg", f"{sudo}dmesg", check=False)
        release = timed("uname", "uname -r").stdout.strip()
        args = " ".join(shlex.quote(t) for t in tests) if tests else ""
        insn_out = timed("insncheck", f"{shlex.quote(insn_path)} {args}".strip()).stdout
        if "user" not in probe.tables:
            raise SshGuestError("the user-mode probe in the guest reported no 'user' table")
        report = classify(parse_insncheck(insn_out), probe.tables["user"], accel=accel, tests=tests)
        return SshObservation(
            argv=self.qemu.argv, probe=probe, probe_transcript=probe_out, cpuinfo_flags=flags, cpuinfo_bugs=bugs,
            vulnerabilities=vulns, kernel_messages=cpu_kernel_messages(dmesg.stdout), kernel_release=release,
            insncheck_output=insn_out, insncheck=report, boot_to_login_s=self.boot_to_login_s or 0.0,
            duration_s=time.monotonic() - t0, serial_path=self.qemu.serial_path, timings_s=timings,
        )


def _not_up_reason(e: BaseException) -> str:
    """A short reason for a failed attempt while the guest boots."""
    text = str(e)
    if isinstance(e, EOFError) or "No existing session" in text or "protocol banner" in text:
        # QEMU's user networking accepts on the forwarded port and closes when nothing listens in the guest
        return "connection closed before the SSH banner (sshd not listening yet)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError | socket.timeout):
        return "no answer (timed out)"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def default_tools() -> dict[str, Path]:
    """The rig's guest tools, built on demand: ``probe-user`` and ``insncheck``."""
    from ..images.insncheck import build_insncheck
    from ..images.probe import build_probe

    return {"probe-user": build_probe().user, "insncheck": build_insncheck()}
