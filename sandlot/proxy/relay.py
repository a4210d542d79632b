"""The front door's data path: a raw HTTP/1.1 byte relay in front of the ASGI front door.

Why: relaying through ASGI cost ~2-4 ms per request and capped bulk transfers at
~200 MiB/s — every request was parsed by h11 into events, turned into ASGI messages,
re-built by httpx into a request and its response parsed again, with several tasks and
queues per request (profile in ``docs/performance.md``). Here a request head is parsed
once (``sandlot.proxy.http1``), checked with the very same rules as the ASGI front door
(``upstream.check_target``, ``routing.target_of``, ``guards``), written to a keep-alive
connection to ``(sandbox IP, port)`` from the route table, and bodies are spliced between
the two sockets as the bytes they are (chunked bodies re-framed, never passed verbatim).
HAProxy/nginx as the data path were considered: they would need a route push protocol,
a second process to supervise and a second implementation of every guard (tokens,
code-interpreter rules, 502 shapes, auto-resume), which is where the security bugs live.

The relay only takes the canonical, common case: a plain HTTP/1.1 request for a running
sandbox that every check lets through. Everything else — API calls, WebSocket upgrades,
``Expect``, HTTP/1.0, odd bytes, a sandbox that is paused (auto-resume) or not found, a
refused token, a closed port — is handed over, with its bytes untouched, to uvicorn's h11
protocol and the ASGI ``FrontDoor``, which answers exactly as before; the connection comes
back to the relay when h11 is done with it and the next request starts (``HandedOff``). So
the relay can only narrow what reaches a sandbox, never widen it. Bodies with a length or
chunked framing pass through a :class:`Pipe`: forwarded from ``data_received`` as they
arrive (chunks re-framed), with backpressure, and no coroutine woken per read.

Header names reach the sandbox in the case the client sent them (as behind E2B's Go
proxy), ``Host`` first: the sandbox's ``ip:port`` or its ``maskRequestHost``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from sandlot.proxy import headers as hdrs
from sandlot.proxy.guards import CODE_INTERPRETER_PORT, ci_refusal, token_refusal
from sandlot.proxy.http1 import Chunked, ChunkedPassthrough, Head, Unparsable, head_end, parse_request, parse_response, rechunk
from sandlot.proxy.routes import Route
from sandlot.proxy.routing import BadTarget, target_of
from sandlot.proxy.traffic import masked_host
from sandlot.proxy.upstream import BadRequestTarget, check_target

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from sandlot.proxy.frontdoor import FrontDoor

log = structlog.get_logger("sandlot.proxy.relay")

HIGH_WATER = 1 << 20
"""Stop reading a socket while this much of its data waits to be relayed."""
IDLE_PER_UPSTREAM = 32
IDLE_EXPIRY = 60.0
"""A pooled connection unused this long is closed: a killed sandbox's sockets never see a FIN."""
CONNECT_TIMEOUT = 5.0
KEEP_ALIVE = 300.0
"""Idle client connections are closed after this long (uvicorn's ``timeout_keep_alive`` before)."""
_FAST_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SLOW_HEADERS = frozenset({b"upgrade", b"expect", b"http2-settings"})
"""WebSockets, ``100-continue`` and h2c go through the ASGI front door."""


class Side(asyncio.Protocol):
    """One socket of the relay: a buffer the transport fills and a coroutine drains."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        self.reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.pipe: Pipe | None = None
        """A body being forwarded straight from ``data_received`` (this side is its source)."""
        self.feeding: Pipe | None = None
        """A pipe writing into this side: its source pauses while this side's writes back up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's transports don't subclass asyncio's
        self.transport.set_write_buffer_limits(high=HIGH_WATER)   # fewer pause/resume rounds on bulk bodies

    def data_received(self, data: bytes) -> None:
        if self.pipe is not None:
            data = self.pipe.feed(data)
            if not data:
                return
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        if self.pipe is not None:
            self.pipe.finish(False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._wake()
        if self.pipe is not None:
            self.pipe.finish(False)
        if self.feeding is not None:
            self.feeding.finish(False)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()
        if self.feeding is not None:
            self.feeding.pause()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.feeding is not None:
            self.feeding.resume()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def fill(self) -> bool:
        """Wait for more data; ``False`` at end of stream."""
        if self.eof:
            return False
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return bool(self.buffer) or not self.eof

    def take(self, n: int | None = None) -> bytearray:
        """Consume ``n`` bytes (all when ``None``) from the buffer."""
        if n is None or n >= len(self.buffer):
            data, self.buffer = self.buffer, bytearray()
        else:
            data = self.buffer[:n]
            del self.buffer[:n]
        if self.reading_paused and len(self.buffer) < HIGH_WATER // 4 and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes | bytearray) -> None:
        if self.transport is None or self.lost:
            raise ConnectionResetError("connection lost")
        self.transport.write(data)
        if self._drain is not None and not self._drain.done():
            await self._drain
            if self.lost:
                raise ConnectionResetError("connection lost")


class Pipe:
    """One body forwarded from ``src``'s ``data_received`` straight to ``dst``'s transport:
    no buffer in between and no coroutine woken per read (issue 14: the coroutine pump cost
    ≈ 1.7 ms of the server's CPU per MiB). ``length`` bytes, or with ``length=None`` a chunked
    body, parsed by :class:`~sandlot.proxy.http1.ChunkedPassthrough` and re-framed chunk for
    chunk as it passes (never forwarded verbatim; a body cut short mid-chunk ends in a broken
    connection, as any short body does). Backpressure: ``src`` stops reading while ``dst``'s writes back up."""

    def __init__(self, src: Side, dst: Side, length: int | None, count: Callable[[int], None]) -> None:
        self.src, self.dst = src, dst
        self.left = length or 0
        self.chunked = ChunkedPassthrough() if length is None else None
        self.count = count
        self.partial = b""
        self.paused = False
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def run(self) -> bool:
        """Forward the whole body; ``False`` if either side ended first or the framing broke."""
        src, dst = self.src, self.dst
        if self.chunked is None and not self.left:
            return True
        if src.lost or dst.lost or dst.transport is None:
            return False
        src.pipe, dst.feeding = self, self
        try:
            if src.buffer:
                rest = self.feed(bytes(src.take()))
                if rest:
                    src.buffer[:0] = rest
            if not self.done.done() and src.eof:
                self.finish(False)
            return await self.done
        finally:
            if src.pipe is self:
                src.pipe = None
            if dst.feeding is self:
                dst.feeding = None
            self.resume()

    def feed(self, data: bytes) -> bytes:
        """Forward what of ``data`` belongs to the body; return the bytes after it."""
        if self.done.done():
            return data
        if self.chunked is not None:
            return self._feed_chunked(data)
        n = self.left
        body: bytes | memoryview
        if len(data) <= n:
            body, rest = data, b""
        else:
            body, rest = memoryview(data)[:n], data[n:]
        self.left -= len(body)
        self._write([body], len(body))
        if not self.left:
            self.finish(True)
        return rest

    def _feed_chunked(self, data: bytes) -> bytes:
        assert self.chunked is not None
        if self.partial:
            data, self.partial = self.partial + data, b""
        try:
            out, used, total = self.chunked.relay(data)
        except Unparsable:
            self.finish(False)
            return b""
        if out:
            self._write(out, total)
        if self.chunked.done:
            self.finish(True)
            return data[used:]
        self.partial = data[used:]   # an incomplete chunk-size line
        return b""

    def _write(self, pieces: list[bytes | memoryview], nbytes: int) -> None:
        transport = self.dst.transport
        if self.dst.lost or transport is None:
            self.finish(False)
            return
        self.count(nbytes)
        if len(pieces) == 1:
            transport.write(pieces[0])
        else:
            transport.writelines(pieces)

    def finish(self, ok: bool) -> None:
        if not self.done.done():
            self.done.set_result(ok)

    def pause(self) -> None:
        if not self.paused and self.src.transport is not None and not self.src.lost:
            self.paused = True
            self.src.transport.pause_reading()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.src.transport is not None and not self.src.lost and not self.src.reading_paused:
                self.src.transport.resume_reading()


class Upstream(Side):
    """A keep-alive connection to one sandbox port."""

    def __init__(self, key: tuple[str, int, str], pool: Pool) -> None:
        super().__init__()
        self.key = key
        self.pool = pool
        self.expiry: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.pool.forget(self)

    def usable(self) -> bool:
        return not self.lost and not self.eof and not self.buffer and self.transport is not None

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Idle keep-alive connections per ``(sandbox IP, port, sandbox id)``: with the id in the
    key, a sandbox that gets a dead one's IP never receives a connection made for the other."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int, str], list[Upstream]] = {}

    async def acquire(self, ip: str, port: int, sandbox_id: str) -> tuple[Upstream, bool] | None:
        """A connection and whether it was reused; ``None`` when the port can't be reached."""
        key = (ip, port, sandbox_id)
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.expiry is not None:
                conn.expiry.cancel()
                conn.expiry = None
            if conn.usable():
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(key, self), ip, port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            return None
        return conn, False

    def release(self, conn: Upstream) -> None:
        idle = self.idle.setdefault(conn.key, [])
        if conn.usable() and len(idle) < IDLE_PER_UPSTREAM:
            idle.append(conn)
            conn.expiry = asyncio.get_running_loop().call_later(IDLE_EXPIRY, self._expire, conn)
        else:
            conn.close()

    def _expire(self, conn: Upstream) -> None:
        conn.expiry = None
        self.forget(conn)
        conn.close()

    def forget(self, conn: Upstream) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self.idle[conn.key]

    async def drop(self, ip: str) -> None:
        """A paused sandbox's sockets are gone without a FIN having reached us: close them."""
        for key in [k for k in self.idle if k[0] == ip]:
            for conn in self.idle.pop(key, []):
                conn.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


class _Plan:
    __slots__ = ("sandbox_id", "route", "port", "host")

    def __init__(self, sandbox_id: str, route: Route, port: int, host: bytes) -> None:
        self.sandbox_id, self.route, self.port, self.host = sandbox_id, route, port, host


class _Handoff(Exception):
    """This request (and the rest of the connection) belongs to the ASGI front door."""


class _Broken(Exception):
    """The exchange failed after bytes went out: the client connection is closed."""


def _json(status: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, HTTPStatus(status).phrase.encode(), len(payload))) + payload


def _head_bytes(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytearray:
    out = bytearray(first_line)
    for name, value in headers:
        out += name + b": " + value + b"\r\n"
    out += b"\r\n"
    return out


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


class Relay:
    """Shared state of all relayed connections: the front door's rules and the upstream pool."""

    def __init__(self, front_door: FrontDoor) -> None:
        self.front_door = front_door
        self.routes = front_door.routes
        self.domain = front_door.domain
        self.envd_port = front_door.envd_port
        self.stats = front_door.stats
        self.pool = Pool()
        self.routes.on_pause(self.pool.drop)

    def protocol(self) -> type[asyncio.Protocol]:
        """The class to give uvicorn as ``http=``."""
        relay = self

        class RelayProtocol(ClientConnection):
            def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                         _loop: asyncio.AbstractEventLoop | None = None) -> None:
                super().__init__(relay, config, server_state, app_state)

        return RelayProtocol

    def plan(self, head: Head) -> _Plan | None:
        """Where this request goes on the fast path, or ``None`` for the ASGI front door."""
        if head.method not in _FAST_METHODS:
            return None
        host_count = 0
        for name, _ in head.headers:
            lower = name.lower()
            if lower in _SLOW_HEADERS:
                return None
            if lower == b"host":
                host_count += 1
        if host_count != 1:
            return None
        token = self.front_door.node_token
        if token is not None and not hdrs.node_token_ok(head.headers, token):
            return None   # the ASGI front door answers the 401
        path, _, query = head.target.partition(b"?")
        try:
            check_target(head.method, path, query)
            target = target_of(head.headers, self.domain)
        except (BadRequestTarget, BadTarget):
            return None
        if target is None or path == b"*":
            return None
        route = self.routes.route(target.sandbox_id)
        if route is None or route.state != "running" or target.port in route.https_ports:
            return None   # (an httpsPorts port: the ASGI front door re-encrypts)
        if token_refusal(head.headers, route, target.port, self.envd_port) is not None:
            return None
        if target.port == CODE_INTERPRETER_PORT and ci_refusal(head.method, head.headers, route, path) is not None:
            return None
        masked = masked_host(route.mask_request_host, target.port)
        host = masked.encode("latin-1") if masked else b"%s:%d" % (route.ip.encode(), target.port)
        return _Plan(target.sandbox_id, route, target.port, host)


class ClientConnection(Side):
    """One client connection: relays sandbox requests until one needs the ASGI front door."""

    def __init__(self, relay: Relay, config: Config, server_state: ServerState, app_state: dict[str, Any]) -> None:
        super().__init__()
        self.relay = relay
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.task: asyncio.Task[None] | None = None
        self.active: Upstream | None = None
        self.idle = True
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.on_lost = self._lost
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def _lost(self) -> None:
        self.server_state.connections.discard(self)
        if self.active is not None:
            self.active.close()   # the client went away: so does its request in the sandbox

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after this exchange."""
        self.closing = True
        if self.idle and self.transport is not None:
            self.transport.close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _serve(self) -> None:
        try:
            while not self.closing:
                self.idle = True   # between requests (a partial head included): shutdown may close
                self._timer = asyncio.get_running_loop().call_later(KEEP_ALIVE, self._close)
                try:
                    end = head_end(self.buffer)
                    while not end:
                        if not await self.fill():
                            self._close()
                            return
                        end = head_end(self.buffer)
                    head = parse_request(bytes(self.buffer[:end]))
                except Unparsable:
                    raise _Handoff() from None
                finally:
                    if self._timer is not None:
                        self._timer.cancel()
                        self._timer = None
                self.idle = False
                plan = self.relay.plan(head)
                if plan is None:
                    raise _Handoff()
                if not await self._exchange(head, plan):
                    self._close()
                    return
            self._close()
        except _Handoff:
            self._handoff()
        except _Broken:
            if self.transport is not None:
                self.transport.abort()
        except Exception:   # a bug here must not leave a client hanging
            log.exception("relay failed")
            if self.transport is not None:
                self.transport.abort()

    def _handoff(self) -> None:
        """Give the connection, unread bytes included, to uvicorn's h11 protocol and the ASGI app."""
        self.server_state.connections.discard(self)
        if self.lost or self.transport is None:
            return
        self.on_lost = None
        proto = HandedOff(self.relay, config=self.config, server_state=self.server_state, app_state=self.app_state)
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.buffer:
            proto.handle(bytes(self.take()))   # h11's: this request is the ASGI front door's
        if self.eof:
            proto.eof_received()

    async def _exchange(self, head: Head, plan: _Plan) -> bool:
        """Relay one request and its response; ``True`` if the connection stays open."""
        got = await self.relay.pool.acquire(plan.route.ip, plan.port, plan.sandbox_id)
        if got is None:
            raise _Handoff()   # the ASGI front door answers "port is not open" as it always did
        upstream, reused = got
        request_head = self._request_head(head, plan)
        stats = self.relay.stats
        stats.relayed += 1
        stats.bytes_to_sandbox += len(request_head)
        if reused and head.length is None:
            # a pooled connection the sandbox closed meanwhile: retry once on a fresh one
            self.active = upstream
            upstream.transport.write(request_head)  # type: ignore[union-attr]
            while not upstream.buffer and await upstream.fill():
                pass
            if not upstream.buffer:
                upstream.close()
                if self.lost:   # the client left while we waited: nothing to retry for
                    return False
                got = await self.relay.pool.acquire(plan.route.ip, plan.port, plan.sandbox_id)
                if got is None:
                    raise _Handoff()
                upstream = self.active = got[0]
                upstream.transport.write(request_head)  # type: ignore[union-attr]
            del self.buffer[:head.size]
            return await self._respond(head, plan, upstream, None)
        del self.buffer[:head.size]
        self.active = upstream
        try:
            await upstream.write(request_head)
        except ConnectionResetError:
            raise _Broken() from None
        body = None
        if head.length:
            body = asyncio.get_running_loop().create_task(self._send_body(head, upstream))
        return await self._respond(head, plan, upstream, body)

    def _request_head(self, head: Head, plan: _Plan) -> bytearray:
        headers = [(name, plan.host) for name, _ in head.headers if name.lower() == b"host"]
        headers += hdrs.to_sandbox(head.headers, None)
        if head.length == -1:
            headers.append((b"Transfer-Encoding", b"chunked"))
        return _head_bytes(b"%s %s HTTP/1.1\r\n" % (head.method.encode(), head.target), headers)

    async def _send_body(self, head: Head, upstream: Upstream) -> None:
        if head.length == -1:
            chunked = Chunked()
            while True:
                spans, used = chunked.feed(self.buffer)
                out = bytearray()
                rechunk(self.buffer, spans, out)
                del self.buffer[:used]
                if chunked.done:
                    out += b"0\r\n\r\n"
                if out:
                    self.relay.stats.bytes_to_sandbox += len(out)
                    await upstream.write(out)
                if chunked.done:
                    return
                if not used and not await self.fill():   # fill only when no progress is possible
                    raise ConnectionResetError("client closed mid-body")
        if not await Pipe(self, upstream, head.length or 0, self._count_to_sandbox).run():
            raise ConnectionResetError("client closed mid-body")

    def _count_to_sandbox(self, n: int) -> None:
        self.relay.stats.bytes_to_sandbox += n

    def _count_from_sandbox(self, n: int) -> None:
        self.relay.stats.bytes_from_sandbox += n

    async def _respond(self, head: Head, plan: _Plan, upstream: Upstream, body: asyncio.Task[None] | None) -> bool:
        self.active = upstream
        try:
            return await self._relay_response(head, plan, upstream, body)
        finally:
            self.active = None
            if body is not None and not body.done():
                body.cancel()
                upstream.close()
            if body is not None:
                try:
                    await body
                except (asyncio.CancelledError, Exception):
                    upstream.close()

    async def _relay_response(self, head: Head, plan: _Plan, upstream: Upstream,
                              body: asyncio.Task[None] | None) -> bool:
        try:
            end = head_end(upstream.buffer)
            while not end:
                if not await upstream.fill():
                    break
                end = head_end(upstream.buffer)
            if not end:
                raise Unparsable("the sandbox closed the connection without a response")
            response = parse_response(bytes(upstream.buffer[:end]))
            if response.status < 200:
                raise Unparsable(f"the sandbox answered with status {response.status}")
        except Unparsable as exc:
            upstream.close()
            if self.lost:
                return False
            message = str(exc) if exc.args and str(exc).startswith("the sandbox") else f"Proxy error: {exc}"
            self.transport.write(_json(502, {"sandboxId": plan.sandbox_id, "message": message,  # type: ignore[union-attr]
                                              "code": 502}))
            return False
        del upstream.buffer[:end]
        if body is not None and not body.done():
            await asyncio.sleep(0)   # its last write may just have drained
        # a sandbox that answers before reading the whole upload: this client connection
        # won't carry another request (the rest of the upload is not read)
        keep = body is None or body.done()
        keep = keep and b"close" not in _connection_tokens(head.headers) and not self.closing
        up_tokens = _connection_tokens(response.headers)
        reusable = b"close" not in up_tokens and response.method != "HTTP/1.0"
        headers = hdrs.from_sandbox(response.headers)
        no_body = head.method == "HEAD" or response.status in (204, 304)
        length = 0 if no_body else response.length
        if length is None:
            headers.append((b"Transfer-Encoding", b"chunked"))
            reusable = False
        elif length == -1:
            headers.append((b"Transfer-Encoding", b"chunked"))
        if not keep:
            headers.append((b"Connection", b"close"))
        out = _head_bytes(b"HTTP/1.1 %d %s\r\n" % (response.status, _phrase(response.status)), headers)
        try:
            ok = await self._relay_body(upstream, length, out)
        except ConnectionResetError:
            upstream.close()
            raise _Broken() from None
        if body is not None:
            if not body.done():
                body.cancel()
            try:
                await body
            except (asyncio.CancelledError, Exception):
                reusable = keep = False
        if ok and reusable:
            self.relay.pool.release(upstream)
        else:
            upstream.close()
        if not ok:
            raise _Broken()
        return keep

    async def write(self, data: bytes | bytearray) -> None:
        """Everything relayed to the client goes through here (counted for ``/metrics``)."""
        self.relay.stats.bytes_from_sandbox += len(data)
        await super().write(data)

    async def _relay_body(self, upstream: Upstream, length: int | None, out: bytearray) -> bool:
        """Response body to the client after ``out`` (the head); ``False`` if it was cut short."""
        if length == 0:
            await self.write(out)
            return True
        if length is None:   # until the sandbox closes: re-framed as chunks
            while True:
                if upstream.buffer:
                    data = upstream.take()
                    out += b"%x\r\n" % len(data)
                    out += data
                    out += b"\r\n"
                if out:
                    await self.write(out)
                    out = bytearray()
                if not upstream.buffer and not await upstream.fill() and not upstream.buffer:
                    await self.write(b"0\r\n\r\n")
                    return True
        await self.write(out)
        ok = await Pipe(upstream, self, None if length == -1 else length, self._count_from_sandbox).run()
        if self.lost:
            raise ConnectionResetError("connection lost")
        return ok


class HandedOff(H11Protocol):
    """uvicorn's h11 protocol for a connection the relay handed over, which it takes back at
    the connection's next request: an SDK's keep-alive connection that carried an API call
    (``POST /v2/sandboxes``) carries its file transfers next, and those belong on the relay."""

    def __init__(self, relay: Relay, config: Config, server_state: ServerState, app_state: dict[str, Any]) -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state)
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if (conn.our_state is h11.IDLE and conn.their_state is h11.IDLE and not conn.trailing_data[0]
                and (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()):
            self._unset_keepalive_if_required()
            self.connections.discard(self)
            relayed = ClientConnection(self.relay, self.config, self.server_state, self.app_state)
            self.transport.set_protocol(relayed)
            relayed.connection_made(self.transport)
            relayed.data_received(data)
            return
        super().data_received(data)

    def handle(self, data: bytes) -> None:
        """Bytes the relay handed over with the connection: h11's, whatever its state."""
        super().data_received(data)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
