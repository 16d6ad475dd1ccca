"""Throwaway Redis and PostgreSQL servers in a directory, on unix sockets, stopped by PID.

For the fleet's tests and benchmark, and to try the fleet on one machine.  PostgreSQL
refuses to run as root: as root, the cluster is created and run as ``user``
(``postgres``, which Debian's ``postgresql`` package creates).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import RigError


class ServiceError(RigError):
    pass


def _pg_bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise ServiceError("PostgreSQL's initdb is not installed", hint="apt-get install postgresql (scripts/setup.sh)")
    return versions[-1].parent


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log: Path
    remove: Path | None = None  # a directory of its own, removed once stopped

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.remove is not None:
            shutil.rmtree(self.remove, ignore_errors=True)


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}: {log.read_text()[-800:]}")
        if time.monotonic() > end:
            proc.kill()
            raise ServiceError(f"{what} did not create {path} within {timeout:.0f} s; log {log}")
        time.sleep(0.05)


def start_redis(workdir: Path) -> Server:
    exe = shutil.which("redis-server")
    if exe is None:
        raise ServiceError("redis-server is not installed", hint="apt-get install redis-server (scripts/setup.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    sock, log = workdir / "redis.sock", workdir / "redis.log"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir), "--logfile", str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_for(sock, proc, log, "redis-server")
    return Server("redis", proc, f"redis+socket://{sock}", log)


def start_postgres(*, user: str = "postgres", database: str = "rig") -> Server:
    """initdb + postgres (as ``user`` when run as root) in a new temporary directory (its own, since
    ``user`` must be able to enter it), the socket there; creates ``database``.  :meth:`Server.stop`
    stops it and removes the directory."""
    bindir = _pg_bindir()
    workdir = Path(tempfile.mkdtemp(prefix="rig-pg-"))
    data, log = workdir / "pgdata", workdir / "postgres.log"
    run_as: dict = {}
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise ServiceError(f"PostgreSQL refuses to run as root and there is no user {user!r} to run it as",
                               hint="apt-get install postgresql creates the postgres user (scripts/setup.sh)") from None
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "rig", "--auth=trust", "-E", "UTF8",
                           "--no-sync"], capture_output=True, text=True, cwd=workdir, **run_as)
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServiceError(f"initdb failed: {(init.stderr or init.stdout).strip()[-600:]}")
    with open(log, "ab") as logf:
        proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-k", str(workdir), "-c", "listen_addresses=",
                                 "-c", "fsync=off", "-c", "max_connections=50"],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=workdir, **run_as)
    _wait_for(workdir / ".s.PGSQL.5432", proc, log, "postgres")
    import psycopg

    end = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(f"postgresql://rig@/postgres?host={workdir}", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{database}"')
            break
        except psycopg.OperationalError:  # "the database system is starting up"
            if time.monotonic() > end or proc.poll() is not None:
                raise
            time.sleep(0.1)
    return Server("postgres", proc, f"postgresql://rig@/{database}?host={workdir}", log, remove=workdir)
