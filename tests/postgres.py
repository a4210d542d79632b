"""A real PostgreSQL 15 (Debian's ``postgresql-15``) in a temp dir, for the tests that run the store on it.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user (PostgreSQL refuses root) on a data dir of
their own, listening on a free loopback port with its socket in that dir, so concurrent test runs
never share a cluster. Password authentication (scram) on loopback, like a deployment would use.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> str | None:
    """Why PostgreSQL can't run here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return "postgresql-15 is not installed (make deps installs it)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (Debian's postgresql-15 package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Postgres:
    root: Path
    port: int
    password: str

    def url(self, database: str = "sandlot") -> str:
        return f"postgresql+psycopg://sandlot:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database owned by the test role; returns its SQLAlchemy URL."""
        done = _psql(self, f'CREATE DATABASE "{name}"')
        if done.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE failed: {done.stderr[-1500:]}")
        return self.url(name)


def _psql(server: Postgres, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "sandlot",
                           "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, env=dict(os.environ, PGPASSWORD=server.password), timeout=60)


def _as_postgres(argv: list[str]) -> None:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a throw-away cluster; stop it and delete its files afterwards."""
    root = Path(tempfile.mkdtemp(prefix="sandlot-pg-"))
    pg = pwd.getpwnam("postgres")
    os.chown(root, pg.pw_uid, pg.pw_gid)
    os.chmod(root, 0o700)
    data = root / "data"
    password = secrets.token_hex(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    port = _free_port()
    started = False
    try:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "sandlot", "--pwfile", str(pwfile),
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-t", "60",
                      "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                            "-c fsync=off -c max_connections=200",
                      "start"])
        started = True
        server = Postgres(root=root, port=port, password=password)
        _wait_ready(server)
        yield server
    finally:
        if started:
            with contextlib.suppress(Exception):
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: Postgres) -> None:
    """Create the test database once connections are accepted (pg_ctl -w already waited)."""
    deadline = time.monotonic() + 30
    while True:
        done = _psql(server, "CREATE DATABASE sandlot")
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not accept connections: {done.stderr[-1500:]}")
        time.sleep(0.2)
