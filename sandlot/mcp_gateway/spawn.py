"""Install and spawn the configured MCP servers, before the gateway imports ``mcp``.

Importing the ``mcp`` package costs the gateway seconds, and each Python server pays the
same again in its own process; spawning the servers first lets both happen at once
(``__main__.serve`` imports the HTTP side only after this). Nothing here imports ``mcp``.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
from anyio.abc import Process

from sandlot.mcp_gateway import install
from sandlot.mcp_gateway.config import ConfigError, Plan

LOG_DIR = Path("/var/log/mcp-gateway")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALLING = threading.Lock()
"""Installs one at a time (two ``npm install`` in one prefix collide)."""


@dataclass
class Spawned:
    plan: Plan
    process: Process
    errlog: IO[bytes]
    """The server's stderr (``log_path``), quoted when it fails."""


def log_path(plan: Plan) -> Path:
    return LOG_DIR / f"{plan.prefix}.log"


def tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure(plan: Plan, what: str, error: BaseException | None = None) -> ConfigError:
    """Why ``plan``'s server did not start: the end of its stderr, else the exception."""
    detail = tail(log_path(plan)) or (f"{type(error).__name__}: {error}" if error is not None else "")
    return ConfigError(f"MCP server '{plan.name}' {what}" + (f": {detail}" if detail else ""))


def _command(plan: Plan, deadline: float) -> tuple[list[str], dict[str, str], str]:
    """Install what ``plan`` needs (blocking: run in a thread); its argv, env and cwd."""
    env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **install.TLS_ENV, **plan.env}
    if plan.github is not None:
        with INSTALLING:
            repo_dir = install.clone(plan.github, deadline)
        return ["bash", "-lc", plan.github.run_cmd], env, str(repo_dir)
    assert plan.entry is not None
    with INSTALLING:
        install.install([plan.entry], deadline)
    if plan.entry.args and plan.entry.args[0] == "--db-path":
        Path(plan.entry.args[1]).parent.mkdir(parents=True, exist_ok=True)
    return [str(install.executable(plan.entry)), *plan.args], env, "/"


async def spawn(plan: Plan, deadline: float) -> Spawned:
    argv, env, cwd = await anyio.to_thread.run_sync(_command, plan, deadline)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    errlog = open(log_path(plan), "wb")
    try:
        process = await anyio.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                                           env=env, cwd=cwd, start_new_session=True)
    except OSError as e:
        errlog.close()
        raise ConfigError(f"MCP server '{plan.name}' could not be started: {e}") from None
    return Spawned(plan, process, errlog)


async def spawn_all(plans: list[Plan], deadline: float) -> list[Spawned]:
    """Every server spawned (installs first where needed), or :class:`ConfigError` for the
    first one that cannot be, in the config's order (the others are killed)."""
    spawned: dict[int, Spawned] = {}
    errors: dict[int, ConfigError] = {}

    async def one(index: int, plan: Plan) -> None:
        try:
            spawned[index] = await spawn(plan, deadline)
        except ConfigError as e:
            errors[index] = e

    async with anyio.create_task_group() as group:
        for index, plan in enumerate(plans):
            group.start_soon(one, index, plan)
    if errors:
        for s in spawned.values():
            s.process.kill()
            s.errlog.close()
        raise errors[min(errors)]
    return [spawned[i] for i in range(len(plans))]
