"""Start envd on the host as a subprocess and point the real e2b SDK at it via sandbox_url."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import atexit
import functools
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import ConnectionConfig
from e2b.sandbox_sync.main import Sandbox
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "tok-secret-123"


def _ensure_user() -> None:
    """The tests assume the E2B template's ``user`` account exists (throwaway/CI machine, root)."""
    try:
        pwd.getpwnam("user")
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip("needs root to create the 'user' account")
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", "user"], check=True)


@functools.cache
def spawn_helper() -> str | None:
    """envd's exec helper built as the runtime install builds it (None: no compiler, so envd
    spawns by fork — the same behaviour, slower)."""
    from sandlot.runtime.envd_bundle import build_spawn_helper

    where = tempfile.mkdtemp(prefix="envd-helper-")
    os.chmod(where, 0o755)  # as in the runtime: anyone in the sandbox may run it (it grants nothing)
    atexit.register(shutil.rmtree, where, True)
    dest = Path(where) / "spawnhelper"
    return str(dest) if build_spawn_helper(dest) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Envd:
    def __init__(self, init: dict, wrapper: list[str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SANDLOT_ENVD_PORT": str(self.port), "SANDLOT_ENVD_HOST": "127.0.0.1",
               "SANDLOT_ENVD_INIT": json.dumps(init), "PYTHONPATH": REPO}
        helper = spawn_helper()
        if helper:
            env["SANDLOT_ENVD_SPAWN_HELPER"] = helper
        self.started = time.monotonic()
        argv = [*(wrapper or []), sys.executable, "-m", "sandlot.envd"]
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO)
        self.startup_seconds = self._wait_healthy()

    def _wait_healthy(self) -> float:
        deadline = self.started + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 204:
                    return time.monotonic() - self.started
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("envd exited during start-up")
            time.sleep(0.02)
        raise RuntimeError("envd did not become healthy")

    def sandbox(self, token: str | None = None) -> Sandbox:
        headers = {"X-Access-Token": token} if token else {}
        cfg = ConnectionConfig(sandbox_url=self.url, api_key="e2b_00", extra_sandbox_headers=headers)
        return Sandbox(sandbox_id="sbxtest", sandbox_domain=None, envd_version=Version("0.6.13"),
                       envd_access_token=token, connection_config=cfg)

    def async_sandbox(self, token: str | None = None):
        from e2b import AsyncSandbox

        headers = {"X-Access-Token": token} if token else {}
        cfg = ConnectionConfig(sandbox_url=self.url, api_key="e2b_00", extra_sandbox_headers=headers)
        return AsyncSandbox(sandbox_id="sbxtest", sandbox_domain=None, envd_version=Version("0.6.13"),
                            envd_access_token=token, connection_config=cfg)

    def rss_kib(self) -> int:
        """Current resident set size of the envd process."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def envd() -> Iterator[Envd]:
    _ensure_user()
    e = Envd({"envVars": {"SBX_VAR": "from-init"}, "defaultUser": "user", "defaultWorkdir": "/home/user"})
    yield e
    e.stop()


@pytest.fixture(scope="session")
def envd_token() -> Iterator[Envd]:
    _ensure_user()
    e = Envd({"accessToken": TOKEN, "defaultUser": "user"})
    yield e
    e.stop()


@pytest.fixture()
def sbx(envd: Envd) -> Sandbox:
    return envd.sandbox()


@pytest.fixture()
def asbx(envd: Envd):
    return envd.async_sandbox()


@pytest.fixture()
def workdir(sbx):
    """A fresh directory path under /tmp (removed afterwards)."""
    import uuid

    d = f"/tmp/envd-test-{uuid.uuid4().hex[:8]}"
    yield d
    sbx.files.remove(d)
