"""The server's client of a sandbox's envd: is it up yet, and running commands in it.

Build steps, start commands and warm-up calls are executed exactly the way the SDK runs
``commands.run``: envd's ``process.Process/Start`` server stream (Connect RPC, JSON codec),
so they get the same users, environment and working directory handling as user commands.
Used by the orchestrator (through :class:`EnvdAgent`, which in-process tests replace) and by
the template builder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sandlot.protocol.auth import ACCESS_TOKEN_HEADER, basic_auth


async def wait_healthy(client: httpx.AsyncClient, ip: str, port: int, timeout_s: float) -> None:
    """Poll ``GET /health`` until envd answers 2xx; raise ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout_s
    url = f"http://{ip}:{port}/health"
    delay = 0.002
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = await client.get(url, timeout=1.0)
            if response.status_code < 300:
                return
        except httpx.HTTPError as exc:
            last_error = exc
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    raise TimeoutError(f"envd did not become healthy within {timeout_s:.0f}s ({last_error!r})")


PROBE_TIMEOUT_S = 2.0
"""How long a running sandbox's envd may take to answer one ``/health``: a healthy one answers
in milliseconds; a hung one (stopped, deadlocked, out of memory) never does."""


async def probe(client: httpx.AsyncClient, ip: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """One ``GET /health`` with a short timeout: does a running envd answer now? (No retries:
    unlike :func:`wait_healthy` at boot, there is nothing to wait for.)"""
    try:
        response = await client.get(f"http://{ip}:{port}/health", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code < 300


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


def _envelope(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


def _headers(target: Target, user: str) -> dict[str, str]:
    return {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        ACCESS_TOKEN_HEADER: target.access_token,
        "Authorization": basic_auth(user),
    }


async def connect_messages(response: httpx.Response) -> AsyncIterator[tuple[bool, dict[str, Any]]]:
    """Split a Connect JSON stream into its messages: ``(is_end, message)``, the end-of-stream
    message (which may carry an ``error``) last. The one frame decoder for envd's streams."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, size = struct.unpack(">BI", buffer[:5])
            if len(buffer) < 5 + size:
                break
            payload, buffer = buffer[5 : 5 + size], buffer[5 + size :]
            message = json.loads(payload or b"{}")
            yield bool(flags & 0x02), message
            if flags & 0x02:
                return


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Yield decoded ``event`` dicts; raise on an end-of-stream error."""
    async for end, message in connect_messages(response):
        if end:
            if message.get("error"):
                err = message["error"]
                raise EnvdExecError(f"{err.get('code')}: {err.get('message')}")
            return
        yield message.get("event") or {}


def _request(cmd: str, args: list[str], envs: dict[str, str], cwd: str | None) -> dict[str, Any]:
    process: dict[str, Any] = {"cmd": cmd, "args": args, "envs": envs}
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


@dataclass
class EnvdShell:
    """Runs commands in one sandbox with a fixed user, working dir and environment
    (a build step's config, or a template's for its start command)."""

    target: Target
    user: str
    workdir: str | None
    env: dict[str, str]
    bash: bool
    http: httpx.AsyncClient
    timeout_s: float

    async def run(self, command: str, on_output: OutputSink, *, user: str | None = None,
                  cwd: str | None = None, env: dict[str, str] | None = None, timeout_s: float | None = None) -> int:
        return await run(
            self.http, self.target, command, user=user or self.user, cwd=cwd or self.workdir,
            envs=env if env is not None else self.env, bash=self.bash, on_output=on_output,
            timeout_s=timeout_s or self.timeout_s,
        )

    async def spawn(self, command: str) -> int:
        return await spawn(self.http, self.target, command, user=self.user, cwd=self.workdir, envs=self.env,
                           bash=self.bash)


async def wait_ready(shell: EnvdShell, ready_cmd: str, timeout_s: float) -> float:
    """Poll ``ready_cmd`` until it exits 0; seconds waited, ``TimeoutError`` otherwise."""
    t0 = time.monotonic()
    while True:
        left = timeout_s - (time.monotonic() - t0)
        if left <= 0:
            raise TimeoutError(f"The ready command did not succeed within {timeout_s:.0f}s: {ready_cmd}")
        code = await shell.run(ready_cmd, lambda _s, _t: None, timeout_s=max(1.0, min(left, 30.0)))
        if code == 0:
            return time.monotonic() - t0
        await asyncio.sleep(0.2)


class EnvdInitError(Exception):
    """envd's ``POST /init`` answered an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"envd /init answered {status}: {text[:200]}")
        self.status = status


class EnvdAgent:
    """The orchestrator's calls to the envd of a sandbox at an IP: health, identity, commands.

    Coarse calls on purpose: it is the orchestrator's second seam beside the runtime (an
    in-process test swaps in a fake; a node agent could make these calls on its host)."""

    def __init__(self, port: int, start_timeout_s: float, ready_timeout_s: float,
                 http: httpx.AsyncClient | None = None) -> None:
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.http = http or httpx.AsyncClient()

    async def wait_healthy(self, ip: str) -> None:
        await wait_healthy(self.http, ip, self.port, self.start_timeout_s)

    async def probe(self, ip: str) -> bool:
        """Whether the envd of a running sandbox answers now (a pause's guest check)."""
        return await probe(self.http, ip, self.port)

    async def init(self, ip: str, token: str | None, body: dict[str, object]) -> None:
        """``POST /init`` authenticated with ``token``; :class:`EnvdInitError` on refusal."""
        response = await self.http.post(f"http://{ip}:{self.port}/init", json=body, timeout=10,
                                        headers={ACCESS_TOKEN_HEADER: token} if token else {})
        if response.status_code >= 300:
            raise EnvdInitError(response.status_code, response.text)

    async def start_command(self, ip: str, token: str, *, user: str, workdir: str | None, env: dict[str, str],
                            bash: bool, start_cmd: str | None, ready_cmd: str | None) -> None:
        """A template's startCmd in the background, then its readyCmd until it passes."""
        shell = EnvdShell(Target(ip, self.port, token), user, workdir, env, bash, self.http, self.ready_timeout_s)
        if start_cmd:
            await shell.spawn(start_cmd)
        if ready_cmd:
            await wait_ready(shell, ready_cmd, self.ready_timeout_s)

    async def warm_up(self, ip: str, token: str) -> None:
        """Touch envd's ``/init`` and process paths once, so a claimed sandbox's first call doesn't
        pay envd's lazy first-use costs."""
        await self.http.post(f"http://{ip}:{self.port}/init", json={}, headers={ACCESS_TOKEN_HEADER: token}, timeout=10)
        await run(self.http, Target(ip, self.port, token), "true", user="root", cwd=None, envs={}, bash=False,
                  on_output=lambda _stream, _text: None, timeout_s=10)

    async def aclose(self) -> None:
        await self.http.aclose()
