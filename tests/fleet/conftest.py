"""Real Redis and PostgreSQL for the fleet tests: started here on unix sockets in temporary
directories (PostgreSQL as the ``postgres`` user when run as root), stopped by PID."""

from __future__ import annotations

import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fleet_helpers beside this file
from fleet_helpers import Worker  # noqa: E402


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: scripts/setup.sh installs it (Debian redis-server)")
    from rig.fleet.services import start_redis

    srv = start_redis(tmp_path_factory.mktemp("redis"))
    yield srv.url
    srv.stop()
    assert srv.proc.poll() is not None


@pytest.fixture(scope="session")
def postgres():
    from rig.fleet.services import start_postgres

    srv = start_postgres()
    yield srv
    srv.stop(signal.SIGINT)  # PostgreSQL's fast shutdown
    assert srv.proc.poll() is not None


@pytest.fixture
def pg_url(postgres):
    """A fresh database of the session's PostgreSQL for each test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres.url.replace("/rig?", "/postgres?"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return postgres.url.replace("/rig?", f"/{name}?")


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(*args, **kw) -> Worker:
        w = Worker(*args, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


