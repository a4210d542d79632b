"""How the Prime façade reaches a sandbox's envd: Connect (binary) for processes, HTTP for files."""

from __future__ import annotations

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

    def processes(self, route: Route) -> ProcessClient:
        return ProcessClient(self.base_url(route), http_client=self._rpc_http, send_compression=None)

    async def aclose(self) -> None:
        await self.http.aclose()
