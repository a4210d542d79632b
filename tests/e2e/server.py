"""A real `sandlot serve` on loopback, started and stopped by the tests."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SANDLOT = Path(sys.executable).parent / "sandlot"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_INSTANCES = itertools.count()
_SUBNETS = itertools.count()


def unique_instance(letter: str) -> str:
    """Host-resource prefix unique to this test process *and call*: two servers of one
    session must never share an nft table, netns or cgroup names (``letter`` is for people)."""
    return f"{letter}{os.getpid() % 10_000:04d}{next(_INSTANCES) % 100:02d}"


@functools.lru_cache(maxsize=1)
def _process_octet() -> int:
    """A second octet (10.X.0.0/16) for this test process: derived from the pid, but moved
    on while the host already has addresses in it, so that concurrent test runs on one
    machine (developers', CI's) don't route each other's sandbox IPs."""
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    taken = {int(m.group(1)) for m in re.finditer(r"inet 10\.(\d+)\.", used)}
    start = os.getpid() % 100
    for step in range(100):
        octet = 100 + (start + step) % 100
        if octet not in taken:
            return octet
    return 100 + start


def unique_subnet(block: int | None = None) -> str:
    """A /22 for sandbox links (256 slots), unique to this test process and call, so no two
    servers of a session route each other's sandboxes. ``block`` is ignored (kept for old
    callers). ``10.X.252.0/22`` is left to tests' own lab hosts (``tests/security/labhost.py``)."""
    return f"10.{_process_octet()}.{(next(_SUBNETS) % 63) * 4}.0/22"


def data_dir() -> Path:
    """The data dir test servers use: ``SANDLOT_DATA_DIR`` (they inherit the environment),
    else the settings' default; never hard-code ``/var/lib/sandlot``."""
    from sandlot.settings import Settings

    return Path(os.environ.get("SANDLOT_DATA_DIR") or Settings.model_fields["data_dir"].default)


STARTED: list["Server"] = []
"""Every server a test started, for the session's final clean-up (``conftest.py``)."""
_UNRESET: dict[str, "Server"] = {}
"""Instance -> the last server of it started since that instance's last reset: what the
session's final clean-up must still reset (a server a test already reset left nothing)."""


@dataclass
class Server:
    """A ``sandlot serve`` subprocess with its own database, key and runtime state."""

    workdir: Path
    api_key: str
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    instance: str = field(default_factory=lambda: unique_instance("t"))
    """Per test process, so concurrent test runs on one machine never share host resources."""
    subnet: str = field(default_factory=lambda: unique_subnet(0))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.workdir / 'sandlot.db'}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SANDLOT_PORT": str(self.port),
                "SANDLOT_DATABASE_URL": self.database_url,
                "SANDLOT_API_KEY": self.api_key,
                "SANDLOT_RUNTIME_STATE_DIR": str(self.workdir / "run"),
                "SANDLOT_INSTANCE": self.instance,
                "SANDLOT_SANDBOX_SUBNET": self.subnet,
                # the code-interpreter-v1 and mcp-gateway builds only where tests need them (the session server)
                "SANDLOT_CODE_INTERPRETER_TEMPLATE": "false",
                "SANDLOT_MCP_GATEWAY_TEMPLATE": "false",
            }
        )
        env.update(self.extra_env)
        return env

    def track(self) -> None:
        """Registers this server for the session's final clean-up (``start`` does; a subclass
        with its own ``start`` calls it)."""
        STARTED.append(self)
        _UNRESET[self.instance] = self

    def start(self, timeout_s: float = 300) -> None:
        self.track()
        log = open(self.workdir / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(SANDLOT), "serve", "--log-level", "info"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sandlot serve exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sandlot serve did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def reset(self) -> None:
        """Kill whatever sandboxes the stopped server left (`sandlot reset`): a stopped
        server leaves its sandboxes running for a restart, and a failed test may not have
        killed its own."""
        self.stop()
        done = subprocess.run([str(SANDLOT), "reset", "--yes"], env=self.env(), capture_output=True, text=True,
                              timeout=300, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"sandlot reset failed for {self.instance}: {done.stderr[-2000:]}")
        self._after_reset()

    def _after_reset(self) -> None:
        # volumes outlive sandboxes (reset unmounts them, keeps their data): a test instance's are debris
        shutil.rmtree(data_dir() / "volumes" / self.instance, ignore_errors=True)
        if _UNRESET.get(self.instance) is self:
            del _UNRESET[self.instance]

    def log_tail(self, lines: int = 60) -> str:
        path = self.workdir / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def reset_all() -> None:
    """Reset every instance a test started and nobody reset since (the session's final clean-up):
    what ``Server.reset`` does, for all of them in one process (``reset_instances.py``), since
    each ``sandlot reset`` process spends seconds importing the server. Any instance that
    fails there is reset again on its own, with ``sandlot reset``'s own error if it fails too."""
    for srv in STARTED:
        srv.stop()
    servers = [srv for srv in _UNRESET.values() if any(srv is started for started in STARTED)]
    if not servers:
        return
    reset: set[str] = set()
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = subprocess.run([sys.executable, "-m", "tests.e2e.reset_instances"], cwd=REPO, capture_output=True,
                              text=True, timeout=300 + 60 * len(servers),
                              input=json.dumps([srv.env() for srv in servers]))
        reset = {json.loads(line)["instance"] for line in done.stdout.splitlines()
                 if line.startswith("{") and "killed" in json.loads(line)}
    for srv in servers:
        if srv.instance in reset:
            srv._after_reset()
        else:
            srv.reset()


SDK_VARS = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN")
"""The E2B SDK's environment variables the tests set."""


@contextlib.contextmanager
def sdk_environment(values: dict[str, str]) -> Iterator[None]:
    """The SDK's variables set to ``values`` (the others of :data:`SDK_VARS` unset) meanwhile,
    restored afterwards."""
    saved = {name: os.environ.get(name) for name in SDK_VARS}
    for name in SDK_VARS:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def sdk_pointed_at(server: Server) -> Iterator[Server]:
    """The E2B SDK environment (``E2B_API_URL`` etc.) aimed at ``server`` meanwhile."""
    with sdk_environment({"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": server.api_key}):
        yield server
