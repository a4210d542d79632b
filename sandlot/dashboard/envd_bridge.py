"""The dashboard's calls to a sandbox's envd: directory listings, file transfer and a PTY.

The server talks to envd as the SDK does (Connect RPC with the JSON codec, ``/files`` over
HTTP), authenticated with the sandbox's envd access token, which never reaches the browser.
Paths are the tenant's own, inside its sandbox: envd resolves them there, never on the host.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from sandlot.orchestrator.envd_client import connect_messages
from sandlot.protocol.auth import ACCESS_TOKEN_HEADER, basic_auth

USER = "user"
"""E2B's default sandbox user: the terminal and the file browser act as it."""


class EnvdError(Exception):
    """envd refused a call; the message is envd's (safe to show the sandbox's owner)."""


@dataclass(frozen=True)
class Envd:
    ip: str
    port: int
    token: str
    http: httpx.AsyncClient

    def url(self, path: str) -> str:
        return f"http://{self.ip}:{self.port}{path}"

    def headers(self, content_type: str | None = "application/json") -> dict[str, str]:
        headers = {ACCESS_TOKEN_HEADER: self.token, "Authorization": basic_auth(USER)}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def unary(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(self.url(f"/{method}"), json=body, headers=self.headers(), timeout=15)
        if response.status_code != 200:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise EnvdError(str(message)[:300])
        result: dict[str, Any] = response.json()
        return result

    # --- files ------------------------------------------------------------------------------

    async def list_dir(self, path: str) -> list[dict[str, Any]]:
        answer = await self.unary("filesystem.Filesystem/ListDir", {"path": path, "depth": 1})
        entries: list[dict[str, Any]] = answer.get("entries", [])
        return sorted(entries, key=lambda e: (e.get("type") != "FILE_TYPE_DIRECTORY", e.get("name", "")))

    async def upload(self, path: str, data: bytes) -> None:
        name = path.rsplit("/", 1)[-1] or "upload"
        response = await self.http.post(self.url("/files"), params={"path": path, "username": USER},
                                        files={"file": (name, data, "application/octet-stream")},
                                        headers=self.headers(None), timeout=120)
        if response.status_code >= 300:
            raise EnvdError(response.text[:300])

    def download(self, path: str) -> httpx.Request:
        """The ``GET /files`` request to stream back (the caller sends it with ``stream=True``)."""
        return self.http.build_request("GET", self.url("/files"), params={"path": path, "username": USER},
                                       headers=self.headers(None), timeout=120)

    # --- a PTY ------------------------------------------------------------------------------

    async def pty(self, cols: int, rows: int) -> AsyncIterator[dict[str, Any]]:
        """Start a login shell on a PTY; yields envd's process events (``start``, ``data``, ``end``)."""
        request = {"process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": {"TERM": "xterm-256color"}},
                   "pty": {"size": {"cols": cols, "rows": rows}}, "tag": "dashboard-terminal"}
        data = json.dumps(request).encode()
        body = struct.pack(">BI", 0, len(data)) + data
        async with self.http.stream("POST", self.url("/process.Process/Start"), content=body,
                                    headers=self.headers("application/connect+json") | {"Connect-Protocol-Version": "1"},
                                    timeout=httpx.Timeout(15, read=None)) as response:
            if response.status_code != 200:
                raise EnvdError(f"envd answered {response.status_code}")
            async for end, message in connect_messages(response):
                if end:
                    if message.get("error"):
                        raise EnvdError(str(message["error"].get("message", "stream error")))
                    return
                yield message.get("event") or {}

    async def pty_input(self, pid: int, data: bytes) -> None:
        await self.unary("process.Process/SendInput",
                         {"process": {"pid": pid}, "input": {"pty": base64.b64encode(data).decode()}})

    async def pty_resize(self, pid: int, cols: int, rows: int) -> None:
        await self.unary("process.Process/Update", {"process": {"pid": pid}, "pty": {"size": {"cols": cols, "rows": rows}}})

    async def kill(self, pid: int) -> None:
        await self.unary("process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})
