"""The gateway daemon: start the servers, aggregate their tools, serve MCP streamable HTTP.

Tools keep their own names, as E2B's (Docker's) gateway shows them; a name that two servers
both offer becomes ``<server>__<tool>`` for each of them, so no call lands on the wrong one.
Every HTTP request needs ``Authorization: Bearer <token>`` (401 otherwise); the front door
relays ``50005-<sandbox>.<domain>`` here, so the token is the only thing between the
gateway and the internet.
"""

from __future__ import annotations

import hmac
import json
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError

from sandlot.mcp_gateway import upstream
from sandlot.mcp_gateway.spawn import Spawned, failure

PATH = "/mcp"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Routes:
    """Exposed tool name → (upstream, its own name for the tool)."""

    def __init__(self, upstreams: list[upstream.Upstream]) -> None:
        counts = Counter(t.name for u in upstreams for t in u.tools)
        self.tools: list[types.Tool] = []
        self.by_name: dict[str, tuple[upstream.Upstream, str]] = {}
        for u in upstreams:
            for tool in u.tools:
                name = tool.name if counts[tool.name] == 1 else f"{u.plan.prefix}__{tool.name}"
                if name in self.by_name:
                    continue  # one server listing a tool twice
                self.tools.append(tool.model_copy(update={"name": name}))
                self.by_name[name] = (u, tool.name)


def mcp_server(routes: Routes) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=routes.tools)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        route = routes.by_name.get(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        target, name = route
        return await target.client.call_tool(name, params.arguments)

    return Server("sandlot-mcp-gateway", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


class BearerAuth:
    """401 for every HTTP request without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error": "unauthorized",
                                   "message": "Authorization: Bearer <the sandbox's MCP token> required"}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def serve(spawned: list[Spawned], token: str, sock: socket.socket, deadline: float,
                ready: Callable[[str | None], None]) -> None:
    """Connect to every server (``ready(error)`` if one fails), then ``ready(None)`` and serve."""
    async with anyio.create_task_group() as servers:
        started: dict[int, upstream.Upstream] = {}
        errors: dict[int, str] = {}

        async def start_one(index: int, one: Spawned) -> None:
            try:
                with anyio.fail_after(max(1.0, deadline - time.monotonic())):
                    started[index] = await servers.start(upstream.run, one)
            except TimeoutError:
                errors[index] = str(failure(one.plan, "did not start in time"))
            except Exception as e:
                errors[index] = str(e)

        async with anyio.create_task_group() as starting:  # in parallel: each start is seconds of imports
            for index, one in enumerate(spawned):
                starting.start_soon(start_one, index, one)
        if errors:
            ready(errors[min(errors)])  # the first failing server in the config's order
            servers.cancel_scope.cancel()
            return
        routes = Routes([started[i] for i in range(len(spawned))])
        app = mcp_server(routes).streamable_http_app(
            streamable_http_path=PATH, host="0.0.0.0",
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        config = uvicorn.Config(BearerAuth(app, token), log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2, proxy_headers=False)
        server = uvicorn.Server(config)
        ready(None)
        print(f"{time.strftime('%FT%T')} serving {len(routes.tools)} tools from "
              f"{', '.join(s.plan.name for s in spawned)} on :{sock.getsockname()[1]}{PATH}", flush=True)
        await server.serve(sockets=[sock])
        servers.cancel_scope.cancel()
