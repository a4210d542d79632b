"""The configured MCP servers as stdio clients of the gateway (the official ``mcp`` package)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from sandlot.mcp_gateway import install
from sandlot.mcp_gateway.config import ConfigError, Plan

LOG_DIR = Path("/var/log/mcp-gateway")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_TOOL_PAGES = 100
INSTALLING = threading.Lock()
"""Servers start in parallel, installs one at a time (two ``npm install`` in one prefix collide)."""


@dataclass
class Upstream:
    plan: Plan
    client: Client
    tools: list[types.Tool]


def _launch(plan: Plan, deadline: float) -> StdioServerParameters:
    """Install what ``plan`` needs (blocking: run in a thread) and say how to start it."""
    env = {"PATH": PATH, "HOME": "/root", **install.TLS_ENV, **plan.env}
    if plan.github is not None:
        with INSTALLING:
            repo_dir = install.clone(plan.github, deadline)
        return StdioServerParameters(command="bash", args=["-lc", plan.github.run_cmd], env=env, cwd=str(repo_dir))
    assert plan.entry is not None
    with INSTALLING:
        install.install([plan.entry], deadline)
    if plan.entry.args and plan.entry.args[0] == "--db-path":
        Path(plan.entry.args[1]).parent.mkdir(parents=True, exist_ok=True)
    return StdioServerParameters(command=str(install.executable(plan.entry)), args=list(plan.args), env=env, cwd="/")


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_path(plan: Plan) -> Path:
    return LOG_DIR / f"{plan.prefix}.log"


def failure(plan: Plan, what: str, error: BaseException | None = None) -> ConfigError:
    """Why ``plan``'s server did not start: the end of its stderr, else the exception."""
    detail = _tail(log_path(plan)) or (f"{type(error).__name__}: {error}" if error is not None else "")
    return ConfigError(f"MCP server '{plan.name}' {what}" + (f": {detail}" if detail else ""))


async def run(plan: Plan, deadline: float, *, task_status: TaskStatus[Upstream]) -> None:
    """Start ``plan``'s server, list its tools, report the :class:`Upstream` through
    ``task_status`` and keep the connection open until cancelled (``TaskGroup.start``:
    the caller bounds the start with its own timeout)."""
    params = await anyio.to_thread.run_sync(_launch, plan, deadline)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_path(plan), "w") as errlog:  # the server's stderr, for the failure message
        try:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                tools: list[types.Tool] = []
                cursor: str | None = None
                for _ in range(MAX_TOOL_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        break
                task_status.started(Upstream(plan, client, tools))
                await anyio.sleep_forever()
        except Exception as e:  # whatever the transport raised, the server's stderr says why
            raise failure(plan, "did not start", e) from None
