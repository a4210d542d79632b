"""``mcp-gateway``: the command the E2B SDK runs after ``Sandbox.create(mcp=...)``.

- ``mcp-gateway --config '<JSON>'`` (``GATEWAY_ACCESS_TOKEN`` in the environment): write the
  token where ``get_mcp_token()`` reads it, start the gateway in the background and exit 0
  once it serves, or print why not on stderr and exit 1 (the SDK then raises
  "Failed to start MCP gateway: <stderr>" and kills the sandbox).
- ``mcp-gateway pull <name>...``: install catalogue servers ahead of time (the SDK's
  ``Template.add_mcp_server``).
- ``mcp-gateway serve``: the background daemon itself (internal).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = Path("/etc/mcp-gateway")
TOKEN_FILE = CONFIG_DIR / ".token"
CONFIG_FILE = CONFIG_DIR / "config.json"
LOG_FILE = Path("/var/log/mcp-gateway/gateway.log")
READY_FD_ENV = "MCP_GATEWAY_READY_FD"
DEADLINE_ENV = "MCP_GATEWAY_DEADLINE_S"
PORT = 50005
START_BUDGET_S = 50.0
"""The SDK waits 60 s for this command: installs, clones and server starts share 50."""


def _private_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def start(raw_config: str) -> int:
    from sandlot.mcp_gateway import config

    try:
        config.parse(raw_config)  # fail fast, before anything is written
    except config.ConfigError as e:
        return _fail(str(e))
    if os.geteuid() != 0:
        return _fail("mcp-gateway must run as root (the SDK runs it so)")
    token = os.environ.get("GATEWAY_ACCESS_TOKEN") or str(uuid.uuid4())
    _private_write(TOKEN_FILE, token)
    _private_write(CONFIG_FILE, raw_config)
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ACCESS_TOKEN"}
    env.update({READY_FD_ENV: str(write_end), DEADLINE_ENV: str(START_BUDGET_S)})
    with open(LOG_FILE, "a") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "sandlot.mcp_gateway", "serve"], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, pass_fds=(write_end,), env=env, cwd="/",
                                  start_new_session=True)
    os.close(write_end)
    answer = b""
    give_up = time.monotonic() + START_BUDGET_S + 5
    while time.monotonic() < give_up:
        readable, _, _ = select.select([read_end], [], [], max(0.0, give_up - time.monotonic()))
        if not readable:
            break
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        answer += chunk
    os.close(read_end)
    text = answer.decode(errors="replace")
    if text == "ok":
        return 0
    if daemon.poll() is None:
        daemon.kill()
    if text.startswith("error:"):
        return _fail(text[len("error:"):].strip())
    if not text and daemon.poll() is None:
        return _fail(f"the MCP servers did not start within {START_BUDGET_S:.0f} s (log: {LOG_FILE})")
    tail = "\n".join(LOG_FILE.read_text(errors="replace").strip().splitlines()[-10:]) if LOG_FILE.exists() else ""
    return _fail(f"the gateway exited before it served: {tail}")


def listen(port: int = PORT) -> socket.socket:
    """Bound before anything starts, so a second gateway fails at once and clients that
    connect between "ready" and uvicorn's first accept wait in the backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(128)
    return sock


async def _serve(plans: list[Any], token: str, sock: socket.socket, deadline: float,
                 ready: Callable[[str | None], None]) -> None:
    from sandlot.mcp_gateway import config, spawn

    try:
        spawned = await spawn.spawn_all(plans, deadline)
    except config.ConfigError as e:
        ready(str(e))
        return
    from sandlot.mcp_gateway import server  # imports mcp: seconds, while the servers import theirs

    await server.serve(spawned, token, sock, deadline, ready)


def serve() -> int:
    from sandlot.mcp_gateway import config

    ready_fd = int(os.environ.pop(READY_FD_ENV))
    deadline = time.monotonic() + float(os.environ.pop(DEADLINE_ENV, START_BUDGET_S))

    def ready(error: str | None) -> None:
        os.write(ready_fd, b"ok" if error is None else f"error: {error}".encode())
        os.close(ready_fd)

    try:
        plans = config.parse(CONFIG_FILE.read_text())
        sock = listen()
    except (config.ConfigError, OSError) as e:
        reason = str(e)
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            reason = f"port {PORT} is in use: an MCP gateway already runs in this sandbox"
        ready(reason)
        return 1
    token = TOKEN_FILE.read_text().strip()
    asyncio.run(_serve(plans, token, sock, deadline, ready))
    return 0


def pull(names: list[str]) -> int:
    from sandlot.mcp_gateway import catalogue, config, install

    try:
        entries = [config.catalogue_entry(name) for name in names]
        install.install(entries, time.monotonic() + 1800)
    except config.ConfigError as e:
        return _fail(str(e))
    print("installed: " + ", ".join(e.spec for e in entries) if entries else
          "catalogue: " + ", ".join(sorted(catalogue.CATALOGUE)))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--config":
        return start(argv[1])
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["pull"]:
        return pull(argv[1:])
    return _fail("usage: mcp-gateway --config '<JSON>' | mcp-gateway pull <name>...")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
