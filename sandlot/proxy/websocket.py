"""WebSocket pass-through: the client's ASGI websocket ↔ a websockets client to the sandbox.

Messages are relayed as they are (text stays text, binary stays binary), close codes
travel both ways, and a port with nothing listening answers the same 502 JSON as plain
HTTP when the server supports ASGI's ``websocket.http.response`` extension.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sandlot.proxy import headers as hdrs

_SKIP = hdrs.HOP_BY_HOP | {
    b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol",
    b"content-length",
}


class _Connect(connect):
    """``websockets``' connect, minus redirects: a sandbox answering the upgrade with
    ``302 Location: ws://127.0.0.1:…`` must not send the front door anywhere else."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def _with_host(host: str | None) -> type[ClientConnection]:
    """A connection class whose handshake carries exactly ``host`` as Host (the library
    would add ours next to its own ``ip:port``)."""

    class Upstream(ClientConnection):
        def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
            super().__init__(protocol, **kwargs)
            if host:
                build = protocol.connect

                def connect_with_host() -> Any:
                    request = build()
                    del request.headers["Host"]
                    request.headers["Host"] = host
                    return request

                protocol.connect = connect_with_host  # type: ignore[method-assign]

    return Upstream


async def deny_websocket(scope: Scope, send: Send, status: int, body: dict[str, Any]) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        payload = json.dumps(body).encode()
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "websocket.http.response.body", "body": payload})
    else:
        await send({"type": "websocket.close", "code": 1011, "reason": body.get("message", "")[:120]})


async def proxy_websocket(scope: Scope, receive: Receive, send: Send, url: str,
                          host: str | None, port_closed: dict[str, Any], tls: ssl.SSLContext | None = None,
                          extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
    """Relay one WebSocket session to ``url`` (``ws://ip:port/path?query``, from ``upstream.websocket_url``);
    ``extra_headers`` are added for the next hop (an API instance's node token)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hdrs.to_sandbox(scope["headers"], None)
               if k.lower() not in _SKIP]
    headers += extra_headers
    subprotocols = list(scope.get("subprotocols") or [])
    extra: dict[str, Any] = {"ssl": tls} if tls is not None else {}   # wss: an httpsPorts port
    try:
        upstream = await _Connect(url, additional_headers=headers, subprotocols=subprotocols or None,
                                  compression=None, max_size=None, proxy=None, user_agent_header=None,
                                  open_timeout=10, ping_interval=None, create_connection=_with_host(host), **extra)
    except OSError:
        await deny_websocket(scope, send, 502, port_closed)
        return
    except InvalidStatus as exc:
        status = exc.response.status_code
        status = status if 400 <= status < 600 else 502   # a redirect or 1xx is not relayed
        await deny_websocket(scope, send, status, {"code": status, "message": "The sandbox refused the WebSocket upgrade"})
        return
    except (InvalidHandshake, asyncio.TimeoutError) as exc:
        await deny_websocket(scope, send, 502, {"code": 502, "message": f"WebSocket handshake with the sandbox failed: {exc}"})
        return
    async with upstream:
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        to_sandbox = asyncio.ensure_future(_client_to_sandbox(receive, upstream))
        to_client = asyncio.ensure_future(_sandbox_to_client(upstream, send))
        done, pending = await asyncio.wait({to_sandbox, to_client}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in (to_sandbox, to_client):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


async def _client_to_sandbox(receive: Receive, upstream: ClientConnection) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code", 1000)
            await upstream.close(code=1000 if code in (1005, 1006) else code)
            return
        if message.get("bytes") is not None:
            await upstream.send(message["bytes"])
        elif message.get("text") is not None:
            await upstream.send(message["text"])


async def _sandbox_to_client(upstream: ClientConnection, send: Send) -> None:
    try:
        async for data in upstream:
            if isinstance(data, bytes):
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": data})
        code = upstream.close_code or 1000
        reason = upstream.close_reason or ""
    except ConnectionClosed as exc:
        code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1011, "sandbox connection lost")
    if code in (1005, 1006):
        code = 1000 if code == 1005 else 1011
    await send({"type": "websocket.close", "code": code, "reason": reason})
