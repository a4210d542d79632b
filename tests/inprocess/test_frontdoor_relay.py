"""The front door's raw relay (``sandlot.proxy.relay``) under a real uvicorn, over raw sockets.

The upstream is a loopback server that records every byte it receives, so the tests check
what a sandbox sees byte for byte: header names as the client sent them, our own framing of
bodies, hop-by-hop headers gone, one upstream connection reused across requests. Requests
the relay doesn't take (API calls, odd framing, closed ports) must reach the ASGI front
door with their bytes intact and get its answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from sandlot.proxy.frontdoor import FrontDoor
from sandlot.proxy.relay import Relay
from sandlot.proxy.routes import PauseHook, Route

SID = "relaysbx1"


class Routes:
    """A route table with one running sandbox on loopback."""

    def __init__(self, route: Route) -> None:
        self.routes = {SID: route}
        self.hooks: list[PauseHook] = []

    def route(self, sandbox_id: str) -> Route | None:
        return self.routes.get(sandbox_id)

    def signing_tokens(self) -> list[tuple[str, str]]:
        return []

    async def wake(self, sandbox_id: str) -> Route | None:
        return None

    def on_pause(self, hook: PauseHook) -> None:
        self.hooks.append(hook)


@dataclass
class Upstream:
    port: int = 0
    received: list[bytes] = field(default_factory=list)   # raw bytes per connection
    connections: int = 0


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"content-length:" in lower:
        body = await reader.readexactly(int(lower.split(b"content-length:")[1].split(b"\r\n")[0]))
    elif b"transfer-encoding: chunked" in lower:
        body = await _read_chunked(reader)
    return head, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body as it came, framing included (up to and including the last chunk's blank line)."""
    raw = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        raw += line
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                raw += trailer
            return raw + b"\r\n"
        raw += await reader.readexactly(size + 2)


async def _serve_upstream(state: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    state.connections += 1
    index = len(state.received)
    state.received.append(b"")
    try:
        while True:
            head, body = await _read_request(reader)
            state.received[index] += head + body
            path = head.split(b" ")[1]
            if path == b"/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
            elif path == b"/close":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
                await writer.drain()
                return
            elif path == b"/extra":   # a second, unasked-for response behind the first
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Poison: 1\r\n\r\npoison")
            elif path == b"/bad":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx")
            elif path == b"/cookie":
                writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b; Domain=example.com; Path=/\r\n"
                             b"Alt-Svc: h2=\"evil:443\"\r\nConnection: X-Hop\r\nX-Hop: secret\r\n"
                             b"Content-Length: 2\r\n\r\nok")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Up: 1\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for the FastAPI app behind the front door."""
    if scope["type"] == "lifespan":
        return
    body = json.dumps({"api": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Door:
    port: int
    upstream: Upstream
    routes: Routes
    relay: Relay


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    state = Upstream()
    up = await asyncio.start_server(lambda r, w: _serve_upstream(state, r, w), "127.0.0.1", 0)
    state.port = up.sockets[0].getsockname()[1]
    routes = Routes(Route(ip="127.0.0.1", state="running", access_token="tok"))
    front = FrontDoor(_api, routes, None)
    relay = Relay(front)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(front, lifespan="off", log_level="warning", http=relay.protocol(), loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Door(sock.getsockname()[1], state, routes, relay)
    finally:
        server.should_exit = True
        await task
        await front.aclose()
        relay.pool.close()
        up.close()


def _to(port: int, sid: str = SID) -> bytes:
    return b"E2b-Sandbox-Id: %s\r\nE2b-Sandbox-Port: %d\r\n" % (sid.encode(), port)


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"content-length:" in lower:
        return head, await reader.readexactly(int(lower.split(b"content-length:")[1].split(b"\r\n")[0]))
    if b"transfer-encoding: chunked" in lower:
        return head, await _read_chunked(reader)
    return head, await reader.read()


async def test_header_names_reach_the_sandbox_as_the_client_sent_them(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /a?b=1 HTTP/1.1\r\nHost: front.example\r\n" + _to(door.upstream.port)
                 + b"X-MiXeD-Case: v\r\nx-lower: w\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
                 b"Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200 ") and b"X-Up: 1" in head
    seen = door.upstream.received[0]
    assert seen.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % door.upstream.port)
    assert b"\r\nX-MiXeD-Case: v\r\n" in seen and b"\r\nx-lower: w\r\n" in seen
    assert b"E2b-Sandbox-Id: " + SID.encode() in seen
    for hop in (b"X-Hop", b"Keep-Alive", b"Proxy-Authorization", b"Connection", b"front.example"):
        assert hop not in seen, hop
    writer.close()


async def test_keep_alive_requests_share_one_upstream_connection_and_bodies_are_reframed(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    port = door.upstream.port
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + _to(port) + b"Content-Length: 5\r\n\r\nhello")
    head, body = await _response(reader)
    assert body == b"hello"
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + _to(port)
                 + b"Transfer-Encoding: chunked\r\n\r\n3;ext=x\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"  # our framing, no ext/trailer
    writer.write(b"GET /chunked HTTP/1.1\r\nHost: x\r\n" + _to(port) + b"\r\n")
    head, body = await _response(reader)
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"   # extension and trailer not relayed
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n" + _to(port) + b"\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 0" in head
    assert door.upstream.connections == 1
    writer.write(b"GET /close HTTP/1.1\r\nHost: x\r\n" + _to(port) + b"\r\n")
    head, body = await _response(reader)
    assert b"transfer-encoding: chunked" in head.lower() and body == b"b\r\nuntil close\r\n0\r\n\r\n"
    writer.close()


async def test_sandbox_response_headers_are_filtered(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /cookie HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    head, body = await _response(reader)
    assert body == b"ok"
    assert b"Set-Cookie: a=b; Path=/\r\n" in head
    assert b"Alt-Svc" not in head and b"X-Hop" not in head and b"secret" not in head
    # a response the relay can't frame safely is a 502 in the front door's shape, never relayed
    writer.write(b"GET /bad HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 502 ")
    assert json.loads(body)["sandboxId"] == SID and json.loads(body)["code"] == 502
    writer.close()


async def test_api_requests_and_refusals_go_to_the_asgi_front_door(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /sandboxes HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = await _response(reader)
    assert json.loads(body) == {"api": "/sandboxes"}
    # h11 + ASGI answered it; the connection's next request is the relay's again
    relayed = door.relay.stats.relayed
    writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and b"GET /after " in door.upstream.received[-1]
    assert door.relay.stats.relayed == relayed + 1
    writer.write(b"GET /sandboxes HTTP/1.1\r\nHost: x\r\n\r\n")   # and back to h11 again
    head, body = await _response(reader)
    assert json.loads(body) == {"api": "/sandboxes"}
    writer.close()
    # an unknown sandbox and a closed port: the ASGI front door's 502 shapes
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    for request, message in ((_to(door.upstream.port, "nosuchsandbox"), "The sandbox was not found"),
                             (_to(closed_port), "The sandbox is running but port is not open")):
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + request + b"\r\n")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 502") and json.loads(body)["message"] == message
        writer.close()


async def test_ambiguous_framing_never_reaches_the_sandbox(door: Door) -> None:
    """Content-Length next to Transfer-Encoding, two lengths, odd codings, obs-fold, bare LF:
    the relay leaves them to h11, which refuses them or reads them one way (chunked wins) and
    the sandbox receives our own unambiguous framing — one framing header per request."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n"
    attacks = [
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (len(smuggled) + 5) + smuggled,
        b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled,
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + smuggled,
        b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled,
        b"X-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n" + smuggled,
    ]
    for attack in attacks:
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(b"POST /first HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + attack)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.1 200")), (attack, head)
        writer.close()
    for raw in door.upstream.received:
        for request in raw.split(b"POST /first")[1:]:
            framing = request.split(b"\r\n\r\n")[0].lower()
            assert framing.count(b"content-length:") + framing.count(b"transfer-encoding:") <= 1, raw
    # bare LF line ends: h11's to judge, never relayed as they are
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /lf HTTP/1.1\nHost: x\n" + _to(door.upstream.port).replace(b"\r\n", b"\n") + b"\n")
    await reader.read(200)
    writer.close()
    assert not any(b"/lf HTTP/1.1\n" in raw for raw in door.upstream.received)


async def test_pausing_drops_idle_upstream_connections(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    await _response(reader)
    assert door.relay.pool.idle   # kept for the next request
    for hook in door.routes.hooks:
        await hook("127.0.0.1")
    assert not door.relay.pool.idle
    writer.write(b"GET /two HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    head, _ = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and door.upstream.connections == 2
    writer.close()


async def test_code_interpreter_port_and_traffic_token_are_guarded(door: Door) -> None:
    door.routes.routes[SID] = Route(ip="127.0.0.1", state="running", access_token="tok", traffic_token="secret-token")
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /private HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 403") and json.loads(body)["code"] == 403
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /private HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port)
                 + b"E2b-Traffic-Access-Token: secret-token\r\n\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and b"/private" in door.upstream.received[-1]
    writer.close()


async def test_large_bodies_cross_whole_both_ways(door: Door) -> None:
    """Several MiB each way: flow control pauses and resumes both sockets, nothing is lost or reordered."""
    payload = bytes(range(256)) * (12 * 4096)   # 12 MiB
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port)
                 + b"Content-Length: %d\r\n\r\n" % len(payload))
    for start in range(0, len(payload), 1 << 20):
        writer.write(payload[start:start + (1 << 20)])
        await writer.drain()
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and body == payload
    chunked = b"".join(b"%x\r\n%s\r\n" % (65536, payload[i:i + 65536]) for i in range(0, 4 << 20, 65536))
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port)
                 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and _dechunk(body) == payload[:4 << 20]   # re-framed, same bytes
    writer.close()


def _dechunk(raw: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = raw.index(b"\r\n", pos)
        size = int(raw[pos:end], 16)
        if size == 0:
            assert raw[end:] == b"\r\n\r\n"
            return out
        out += raw[end + 2:end + 2 + size]
        assert raw[end + 2 + size:end + 4 + size] == b"\r\n"
        pos = end + 4 + size


async def test_a_sandbox_cannot_queue_responses_for_later_requests(door: Door) -> None:
    """Bytes a sandbox sent beyond its response are not read as the answer to the next
    request (another client's, on a pooled connection): a connection with unread bytes is
    dropped, at release and again at reuse. (A pooled connection only ever carries that one
    sandbox port's own traffic.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"GET /extra HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"\r\n")
    head, body = await _response(reader)
    assert body == b"ok"
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + _to(door.upstream.port) + b"Content-Length: 4\r\n\r\nmine")
    head, body = await _response(reader)
    assert body == b"mine" and b"X-Poison" not in head
    assert door.upstream.connections == 2
    writer.close()
