"""Run a command in a sandbox through its envd (Connect RPC, JSON codec) from the server.

Build steps and start commands are executed exactly the way the SDK runs
``commands.run``: envd's ``process.Process/Start`` server stream, so they get the
same users, environment and working directory handling as user commands.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

import httpx

OutputSink = Callable[[str, str], None]
"""Receives ``(stream, text)`` chunks: stream is ``stdout`` or ``stderr``."""


class EnvdExecError(Exception):
    """envd refused or broke the stream (not a non-zero exit: that is a result)."""


@dataclass(frozen=True)
class Target:
    ip: str
    port: int
    access_token: str


def shell_argv(command: str, *, bash: bool) -> tuple[str, list[str]]:
    """E2B runs commands with ``bash -l -c``; images without bash get ``sh -c``."""
    return ("/bin/bash", ["-l", "-c", command]) if bash else ("/bin/sh", ["-c", command])


def _envelope(message: dict) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


def _headers(target: Target, user: str) -> dict[str, str]:
    return {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "X-Access-Token": target.access_token,
        "Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode(),
    }


async def _events(response: httpx.Response):
    """Yield decoded ``event`` dicts; raise on an end-of-stream error."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, size = struct.unpack(">BI", buffer[:5])
            if len(buffer) < 5 + size:
                break
            payload, buffer = buffer[5 : 5 + size], buffer[5 + size :]
            message = json.loads(payload or b"{}")
            if flags & 0x02:
                if message.get("error"):
                    err = message["error"]
                    raise EnvdExecError(f"{err.get('code')}: {err.get('message')}")
                return
            yield message.get("event") or {}


def _request(cmd: str, args: list[str], envs: dict[str, str], cwd: str | None) -> dict:
    process: dict = {"cmd": cmd, "args": args, "envs": envs}
    if cwd:
        process["cwd"] = cwd
    return {"process": process, "stdin": False}


async def run(
    client: httpx.AsyncClient, target: Target, command: str, *, user: str, cwd: str | None, envs: dict[str, str],
    bash: bool, on_output: OutputSink, timeout_s: float,
) -> int:
    """Run ``command`` to completion; returns its exit code (signals → 128+n like a shell)."""
    cmd, args = shell_argv(command, bash=bash)
    url = f"http://{target.ip}:{target.port}/process.Process/Start"
    headers = _headers(target, user) | {"Connect-Timeout-Ms": str(int(timeout_s * 1000))}
    body = _envelope(_request(cmd, args, envs, cwd))
    async with client.stream("POST", url, content=body, headers=headers, timeout=httpx.Timeout(timeout_s + 5)) as response:
        if response.status_code != 200:
            raise EnvdExecError(f"envd answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for event in _events(response):
            if "data" in event:
                for stream in ("stdout", "stderr"):
                    if event["data"].get(stream):
                        on_output(stream, base64.b64decode(event["data"][stream]).decode(errors="replace"))
            elif "end" in event:
                end = event["end"]  # proto3 JSON omits zero values: no exitCode means 0
                if end.get("exited") or "exitCode" in end or not end.get("status", "").startswith("signal"):
                    return int(end.get("exitCode", 0))
                return 128 + 9
    raise EnvdExecError("envd closed the stream before the command ended")


async def spawn(
    client: httpx.AsyncClient, target: Target, command: str, *, user: str, cwd: str | None, envs: dict[str, str],
    bash: bool,
) -> int:
    """Start ``command`` in the background (envd keeps it running after we hang up); returns its pid."""
    cmd, args = shell_argv(command, bash=bash)
    url = f"http://{target.ip}:{target.port}/process.Process/Start"
    body = _envelope(_request(cmd, args, envs, cwd) | {"tag": "start_cmd"})
    async with client.stream("POST", url, content=body, headers=_headers(target, user), timeout=30) as response:
        if response.status_code != 200:
            raise EnvdExecError(f"envd answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for event in _events(response):
            if "start" in event:
                return int(event["start"].get("pid", 0))
    raise EnvdExecError("envd closed the stream before the start command started")
