"""ASGI front door: proxies sandbox traffic, hands everything else to the API app.

Bodies are streamed both ways (chunked uploads, long-lived Connect streams,
large downloads) and nothing is decoded: ``Content-Encoding`` passes through.

Under ``sandlot serve`` the common case — a plain HTTP/1.1 request for a running sandbox
that every guard admits — never gets here: ``sandlot.proxy.relay`` relays its bytes. This
app answers everything else: the API, WebSockets, auto-resume, signed ``/files`` URLs and
every refusal (400/401/403/502 JSON), and it is what the in-process tests drive.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog

from sandlot.proxy import headers as hdrs
from sandlot.proxy.guards import CODE_INTERPRETER_PORT, ci_refusal, token_refusal
from sandlot.proxy.routes import RouteTable
from sandlot.proxy.routing import BadTarget, Target, target_of
from sandlot.proxy.signed_files import signer_of
from sandlot.proxy.stats import TrafficStats
from sandlot.proxy.traffic import masked_host
from sandlot.proxy.upstream import BadRequestTarget, check_target, http_url, is_asterisk, websocket_url
from sandlot.proxy.websocket import deny_websocket, proxy_websocket

log = structlog.get_logger("sandlot.proxy")

ASGIApp = Any


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _reply(scope: dict[str, Any], send: Any, status: int, body: dict[str, Any]) -> None:
    """A JSON error for HTTP and WebSocket requests alike."""
    if scope["type"] == "websocket":
        await deny_websocket(scope, send, status, body)
    else:
        await _send_json(send, status, body)


class FrontDoor:
    def __init__(self, api: ASGIApp, routes: RouteTable, domain: str | None, envd_port: int = 49983) -> None:
        self.api = api
        self.routes = routes
        self.domain = domain
        self.envd_port = envd_port
        self.node_token: bytes | None = None
        """Under ``sandlot node``: every request must carry it (it comes from an API instance)."""
        self.stats = TrafficStats()
        """Requests and bytes to sandboxes (ASGI path here, relay in ``relay.py``): ``/metrics``."""
        routes.on_pause(self.drop_connections)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=60),
            trust_env=False,   # always straight to the sandbox IP, whatever HTTP_PROXY says
        )
        self.backend_tls = ssl.create_default_context()
        self.backend_tls.check_hostname = False
        self.backend_tls.verify_mode = ssl.CERT_NONE
        """E2B's ``httpsPorts``: re-encrypted to the sandbox, its certificate not verified (as E2B)."""
        self.tls_client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50, keepalive_expiry=60),
            trust_env=False, verify=self.backend_tls,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.api(scope, receive, send)
            return
        if self.node_token is not None and not hdrs.node_token_ok(scope["headers"], self.node_token):
            await _reply(scope, send, 401, {"code": 401, "message": "This is a Sandlot node agent: it answers "
                                            "only its API instances (missing or wrong X-Sandlot-Node-Token)"})
            return
        try:
            check_target(scope.get("method", "GET"), scope.get("raw_path") or scope["path"].encode(),
                         scope.get("query_string", b""))
            target = target_of(scope["headers"], self.domain)
        except (BadTarget, BadRequestTarget) as exc:
            await _reply(scope, send, 400, {"code": 400, "message": str(exc)})
            return
        if target is None and scope["type"] == "http" and scope["path"] == "/files":
            query = scope.get("query_string", b"")
            signer = signer_of(scope["method"], query, self.routes.signing_tokens())
            if signer is None and b"signature=" in query:
                await _send_json(send, 401, {"code": 401, "message": "invalid signature"})
                return
            target = Target(signer, self.envd_port) if signer else None
        if target is None:
            await self.api(scope, receive, send)
            return
        await self._proxy(scope, receive, send, target)

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any, target: Target) -> None:
        route = self.routes.route(target.sandbox_id)
        if route is None:   # autoResume: a paused sandbox that asked for it resumes transparently
            route = await self.routes.wake(target.sandbox_id)
        if route is None or route.state != "running":
            await _reply(
                scope, send, 502, {"sandboxId": target.sandbox_id, "message": "The sandbox was not found", "code": 502}
            )
            return
        refusal = token_refusal(scope["headers"], route, target.port, self.envd_port)
        if refusal is not None:
            await _reply(scope, send, 403, {"sandboxId": target.sandbox_id, "message": refusal, "code": 403})
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        if scope["type"] == "http" and is_asterisk(scope["method"], path):
            await send({"type": "http.response.start", "status": 204,
                        "headers": [(b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            tls = target.port in route.https_ports
            url = http_url(route.ip, target.port, path, query, tls=tls)
            ws_url = websocket_url(route.ip, target.port, path, query, tls=tls) if scope["type"] == "websocket" else ""
        except BadRequestTarget as exc:
            await _reply(scope, send, 400, {"sandboxId": target.sandbox_id, "message": str(exc), "code": 400})
            return
        if target.port == CODE_INTERPRETER_PORT:
            method = scope["method"] if scope["type"] == "http" else None
            refusal = ci_refusal(method, scope["headers"], route, url.raw_path.partition(b"?")[0])
            if refusal is not None:
                await _reply(scope, send, 401, {"sandboxId": target.sandbox_id, "message": refusal, "code": 401})
                return
        host = masked_host(route.mask_request_host, target.port)
        stats = self.stats
        if scope["type"] == "websocket":
            stats.websockets += 1
            port_closed = {"sandboxId": target.sandbox_id, "message": "The sandbox is running but port is not open",
                           "port": target.port, "code": 502}
            await proxy_websocket(scope, receive, send, ws_url, host, port_closed, self.backend_tls if tls else None)
            return
        stats.proxied += 1
        headers = hdrs.to_sandbox(scope["headers"], host)
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        body_done = asyncio.Event()

        async def request_body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    body_done.set()
                    raise asyncio.CancelledError("client went away")
                chunk = message.get("body", b"")
                if chunk:
                    stats.bytes_to_sandbox += len(chunk)
                    yield chunk
                if not message.get("more_body", False):
                    body_done.set()
                    return

        client = self.tls_client if tls else self.client
        request = client.build_request(
            scope["method"], url, headers=headers, content=request_body() if has_body else None
        )
        if not has_body:
            body_done.set()
        try:
            upstream = await client.send(request, stream=True)
        except httpx.ConnectError:
            await _send_json(
                send,
                502,
                {
                    "sandboxId": target.sandbox_id,
                    "message": "The sandbox is running but port is not open",
                    "port": target.port,
                    "code": 502,
                },
            )
            return
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            log.warning("proxy request failed", sandbox_id=target.sandbox_id, error=repr(exc))
            await _send_json(send, 502, {"sandboxId": target.sandbox_id, "message": f"Proxy error: {exc}", "code": 502})
            return

        async def watch_disconnect() -> None:
            await body_done.wait()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        if upstream.status_code < 200:  # e.g. a 101 nobody asked for: we never forward Upgrade
            await upstream.aclose()
            await _send_json(send, 502, {"sandboxId": target.sandbox_id, "code": 502,
                                         "message": f"The sandbox answered with status {upstream.status_code}"})
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": hdrs.from_sandbox(list(upstream.headers.raw)),
                }
            )
            pump = asyncio.ensure_future(self._pump(upstream, send, stats))
            watcher = asyncio.ensure_future(watch_disconnect())
            done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                pump.cancel()
            watcher.cancel()
            for task in (pump, watcher):
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        finally:
            await upstream.aclose()

    @staticmethod
    async def _pump(upstream: httpx.Response, send: Any, stats: TrafficStats) -> None:
        async for chunk in upstream.aiter_raw():
            stats.bytes_from_sandbox += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def drop_connections(self, ip: str) -> None:
        """Close idle keep-alive connections to ``ip``: a paused sandbox's sockets are gone
        without a FIN having reached us, so reusing them after resume would fail."""
        pool = getattr(self.client._transport, "_pool", None)
        for conn in list(getattr(pool, "connections", [])):
            origin = getattr(conn, "_origin", None)
            if origin is not None and origin.host.decode() == ip and conn.is_idle():
                await conn.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.tls_client.aclose()
