"""How the Prime façade reaches a sandbox's envd: Connect (binary) for processes, HTTP for files."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
from pyqwest import Client as RPCHTTPClient
from pyqwest import HTTPTransport

from sandlot.protocol.auth import ACCESS_TOKEN_HEADER, basic_auth
from sandlot.protocol.gen.process.process_connect import ProcessClient
from sandlot.proxy.routes import Route

PRIME_DEFAULT_USER = "root"
"""Prime sandboxes are Docker-image VMs where commands run as root unless ``user`` says otherwise."""


class EnvdAccess:
    """Shared HTTP clients to envd at the sandbox IP (never through the public front door)."""

    def __init__(self, envd_port: int) -> None:
        self.port = envd_port
        # straight to the sandbox IP: no proxy from the environment, and a redirect from the
        # sandbox is an answer, never a place to go
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=300.0), trust_env=False)
        self._rpc_http = RPCHTTPClient(HTTPTransport(follow_redirects=False))

    def base_url(self, route: Route) -> str:
        """Always the sandbox's own IP (never a name or anything a request carried)."""
        return f"http://{ipaddress.IPv4Address(route.ip)}:{int(self.port)}"

    def headers(self, route: Route, user: str | None) -> dict[str, str]:
        """envd selects the user with Basic auth and guards everything with the access token."""
        name = user or PRIME_DEFAULT_USER
        return {
            ACCESS_TOKEN_HEADER: route.access_token,
            "Authorization": basic_auth(name),
        }

    async def read_file(self, route: Route, path: str, limit: int, timeout_s: float = 30.0) -> bytes | None:
        """At most ``limit`` bytes of a sandbox file, read as root; ``None`` if it can't be read.

        The tenant shapes the file (a symlink to ``/dev/zero``, a pipe): the body is streamed
        and dropped past ``limit``, and the read gives up after ``timeout_s``."""
        data = bytearray()
        try:
            async with asyncio.timeout(timeout_s):
                async with self.http.stream("GET", f"{self.base_url(route)}/files", params={"path": path, "username": "root"},
                                            headers=self.headers(route, "root")) as response:
                    if response.status_code != 200:
                        return None
                    async for chunk in response.aiter_bytes():
                        data += chunk[: limit - len(data)]
                        if len(data) >= limit:
                            break
        except (httpx.HTTPError, TimeoutError):
            return None
        return bytes(data)

    def processes(self, route: Route) -> ProcessClient:
        return ProcessClient(self.base_url(route), http_client=self._rpc_http, send_compression=None)

    async def aclose(self) -> None:
        await self.http.aclose()
