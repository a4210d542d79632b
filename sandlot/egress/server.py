"""The egress proxy: one per server, in the data path of sandboxes with rules or an egressProxy.

nft redirects (runtime/egress.py) a sandbox's new TCP connections to ports 80 and 443 to the
*intercept* listener when it has ``network.rules``, and every other new TCP connection to
the *tunnel* listener when it has an ``egressProxy``. The sandbox is known by the source
address (a veth's anti-spoofing makes it unforgeable), its configuration is read from the
store at each new connection (so ``PUT /network`` applies to new connections), the original
destination comes from conntrack (``SO_ORIGINAL_DST``).

Port 443 is TLS, terminated with a certificate for the client's SNI signed by the per-server
CA (``ca.py``); the upstream connection goes to the address the sandbox dialled and verifies
the server's certificate for that same name against the host's bundle, so a secret only ever
leaves inside a session with the genuine host. Port 80 is plain HTTP: a rule's headers are
only added when the Host name resolves (host-side, through the server's resolvers) to the
address the sandbox dialled. Requests are parsed and re-framed with h11 on both sides, one
request at a time; a matching rule's headers replace same-named ones, their
``${e2b.secrets.<name>}`` references resolved from the team's secrets at that moment and
``${e2b.identity.tokens.<name>}`` ones by a JWT-SVID minted for this request (``identity.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import struct
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import h11

from sandlot.egress import socks
from sandlot.egress.ca import EgressCA
from sandlot.egress.config import SECRET, TEXT, HeaderValue, Rule, UpstreamProxy, match
from sandlot.egress.destinations import Destinations
from sandlot.runtime.egress import EgressPolicy

log = logging.getLogger(__name__)

SO_ORIGINAL_DST = 80
MAX_HEAD_BYTES = 64 * 1024
"""A request or response head larger than this is refused (431 / 502)."""
HEAD_TIMEOUT_S = 30.0
"""A client must send a whole request head within this (slowloris)."""
IDLE_TIMEOUT_S = 120.0
"""A connection or body with no byte moving for this long is closed."""
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS_PER_SANDBOX = 256
CHUNK = 64 * 1024


@dataclass(frozen=True)
class EgressContext:
    """What the proxy needs about the sandbox behind a source address, read per connection."""

    sandbox_id: str
    team_id: str
    policy: EgressPolicy
    rules: tuple[Rule, ...]
    upstream: UpstreamProxy | None
    tokens: Mapping[str, str] = field(default_factory=dict)
    """The sandbox's ``iam`` tokens, name -> audience."""
    template_id: str = ""


Lookup = Callable[[str], EgressContext | None]
SecretReader = Callable[[str, str], str | None]
"""``(team_id, secret name) -> value``; host-side only, the value is never logged."""
Minter = Callable[[EgressContext, str], str]
"""``(sandbox, audience) -> a fresh JWT-SVID``; host-side only, the token is never logged."""


class Refused(Exception):
    """A request the proxy answers itself (status, message to the sandbox: never a secret)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


def _host_name(value: bytes | None) -> str | None:
    """The name of a Host header / SNI (port and trailing dot dropped, lower case)."""
    if not value:
        return None
    text = value.decode("ascii", "replace").strip().lower()
    if text.startswith("["):
        return None
    name = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return name.rstrip(".") or None


class EgressProxy:
    def __init__(self, ca: EgressCA, destinations: Destinations, lookup: Lookup, secret: SecretReader,
                 upstream_cafiles: list[str], system_bundle: str | None, mint: Minter | None = None) -> None:
        self.ca = ca
        self.mint = mint
        self.destinations = destinations
        self.lookup = lookup
        self.secret = secret
        self.system_bundle = system_bundle
        self.http_port = 0
        self.https_port = 0
        self.tunnel_port = 0
        self._servers: list[asyncio.Server] = []
        self._per_sandbox: dict[str, int] = {}
        self._sni: weakref.WeakKeyDictionary[ssl.SSLObject, str | None] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()
        self.upstream_tls = ssl.create_default_context(cafile=system_bundle)
        for path in upstream_cafiles:
            self.upstream_tls.load_verify_locations(cafile=path)
        self.upstream_tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.upstream_tls.set_alpn_protocols(["http/1.1"])
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = ssl.TLSVersion.TLSv1_2
        base.set_alpn_protocols(["http/1.1"])
        base.sni_callback = self._on_sni
        self._base_tls = base

    # --- listeners ---------------------------------------------------------------------------

    async def start(self) -> None:
        http = await asyncio.start_server(self._accepted_http, sock=self._listen())
        https = await asyncio.start_server(self._accepted_https, sock=self._listen(), ssl=self._base_tls,
                                           ssl_handshake_timeout=HEAD_TIMEOUT_S)
        tunnel = await asyncio.start_server(self._accepted_tunnel, sock=self._listen())
        self._servers = [http, https, tunnel]
        self.http_port, self.https_port, self.tunnel_port = (s.sockets[0].getsockname()[1] for s in (http, https, tunnel))
        log.info("egress proxy listening (http :%d, https :%d, tunnel :%d)",
                 self.http_port, self.https_port, self.tunnel_port)

    @staticmethod
    def _listen() -> socket.socket:
        """All addresses, an ephemeral port: nft's ``redirect`` lands on the slot's host address.
        Only redirected connections from sandboxes get here (the input chain), and a peer that
        is not a sandbox with a proxied configuration is dropped at accept."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 0))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        self._servers = []

    def _admit(self, writer: asyncio.StreamWriter) -> tuple[EgressContext, tuple[str, int]] | None:
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if not peer or sock is None:
            return None
        ctx = self.lookup(peer[0])
        if ctx is None:
            return None
        if self._per_sandbox.get(peer[0], 0) >= MAX_CONNECTIONS_PER_SANDBOX:
            log.warning("egress proxy: connection limit reached for sandbox %s", ctx.sandbox_id)
            return None
        try:
            return ctx, original_destination(sock)
        except OSError:
            return None

    async def _tracked(self, peer: str, work: Awaitable[None], writer: asyncio.StreamWriter) -> None:
        self._per_sandbox[peer] = self._per_sandbox.get(peer, 0) + 1
        try:
            await work
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except Exception:
            log.exception("egress proxy: connection failed")
        finally:
            left = self._per_sandbox.get(peer, 1) - 1
            if left:
                self._per_sandbox[peer] = left
            else:
                self._per_sandbox.pop(peer, None)
            writer.close()

    async def _accepted_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._accepted(reader, writer, tls=False)

    async def _accepted_https(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._accepted(reader, writer, tls=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        admitted = self._admit(writer)
        if admitted is None:
            writer.close()
            return
        ctx, dest = admitted
        await self._tracked(writer.get_extra_info("peername")[0],
                            self._intercept(ctx, dest, tls, reader, writer), writer)

    async def _accepted_tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        admitted = self._admit(writer)
        if admitted is None:
            writer.close()
            return
        ctx, dest = admitted
        await self._tracked(writer.get_extra_info("peername")[0], self._tunnel(ctx, dest, reader, writer), writer)

    # --- dialing -----------------------------------------------------------------------------

    async def _resolve(self, policy: EgressPolicy, name: str) -> set[str]:
        """``name``'s IPv4 addresses from the server's resolvers (as the DNS filter asks them)."""
        try:
            return {str(ipaddress.IPv4Address(name))}
        except ValueError:
            pass
        resolver = dns.asyncresolver.Resolver(configure=not policy.upstreams)
        if policy.upstreams:
            resolver.nameservers = list(policy.upstreams)
        resolver.lifetime = 5.0
        try:
            answer = await resolver.resolve(name, "A")
        except (dns.exception.DNSException, OSError):
            return set()
        return {rdata.address for rdata in answer}

    async def _check(self, ctx: EgressContext, ip: str, name: str | None) -> None:
        """Refuse a destination nft would not let this sandbox reach directly."""
        why = self.destinations.floor(ip)
        if why is None and name is not None and ctx.policy.domains:
            # a domain allow-list admits ``name`` only where that name really points
            verified = name if ip in await self._resolve(ctx.policy, name) else None
            why = self.destinations.allowed(ctx.policy, ip, verified)
        elif why is None:
            why = self.destinations.allowed(ctx.policy, ip, None)
        if why is not None:
            raise Refused(403, f"Sandlot egress proxy: {ip} is not reachable from this sandbox ({why})")

    async def _dial(self, ctx: EgressContext, ip: str, port: int, tls_name: str | None
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if ctx.upstream is None:
            return await asyncio.wait_for(
                asyncio.open_connection(ip, port, ssl=self.upstream_tls if tls_name else None,
                                        server_hostname=tls_name), CONNECT_TIMEOUT_S)
        proxy_ips = await self._resolve(ctx.policy, ctx.upstream.host)
        if not proxy_ips:
            raise Refused(502, f"Sandlot egress proxy: the egress proxy {ctx.upstream.host} does not resolve")
        proxy_ip = sorted(proxy_ips)[0]
        why = self.destinations.floor(proxy_ip)
        if why is not None:
            raise Refused(502, f"Sandlot egress proxy: the egress proxy's address is closed ({why})")
        try:
            reader, writer = await socks.dial(ctx.upstream, proxy_ip, ip, port, CONNECT_TIMEOUT_S, self.system_bundle)
        except Exception as exc:   # python-socks' errors: fail closed, never direct
            raise Refused(502, f"Sandlot egress proxy: the egress proxy refused or failed: {type(exc).__name__}") from None
        if tls_name:
            await writer.start_tls(self.upstream_tls, server_hostname=tls_name)
        return reader, writer

    # --- plain TCP through the upstream proxy ----------------------------------------------

    async def _tunnel(self, ctx: EgressContext, dest: tuple[str, int], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            await self._check(ctx, dest[0], None)
            up_reader, up_writer = await self._dial(ctx, dest[0], dest[1], None)
        except (Refused, OSError, asyncio.TimeoutError) as exc:
            log.info("egress proxy: tunnel of sandbox %s to %s:%d refused: %s", ctx.sandbox_id, *dest, exc)
            return
        try:
            await _splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    # --- HTTP and HTTPS ----------------------------------------------------------------------

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self._sni[sslobj] = name
        target = name or "egress.sandlot.invalid"   # no SNI (an IP URL): no name to vouch for
        try:
            sslobj.context = self.ca.context_for(target)
        except Exception:
            log.exception("egress proxy: no certificate for %r", target)

    async def _intercept(self, ctx: EgressContext, dest: tuple[str, int], tls: bool, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        sni: str | None = None
        if tls:
            sslobj = writer.get_extra_info("ssl_object")
            sni = self._sni.get(sslobj) if sslobj is not None else None
            sni = sni.lower().rstrip(".") if sni else None
        client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        server: h11.Connection | None = None
        try:
            while True:
                try:
                    request = await _next_event(client, reader, HEAD_TIMEOUT_S if client.their_state is h11.IDLE
                                                and upstream is None else IDLE_TIMEOUT_S)
                except h11.RemoteProtocolError as exc:
                    status = getattr(exc, "error_status_hint", 400)
                    await _answer(client, writer, status, "Sandlot egress proxy: malformed request")
                    return
                if not isinstance(request, h11.Request):
                    return   # ConnectionClosed
                try:
                    name, headers = await self._prepare(ctx, dest, tls, sni, request)
                    await self._check(ctx, dest[0], name)
                    if upstream is None:
                        upstream = await self._dial(ctx, dest[0], dest[1], (sni or name) if tls else None)
                        server = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
                except Refused as exc:
                    await _answer(client, writer, exc.status, str(exc))
                    return
                except ssl.SSLCertVerificationError as exc:
                    await _answer(client, writer, 502, f"Sandlot egress proxy: the upstream certificate of "
                                                       f"{sni or name} is not valid: {exc.verify_message}")
                    return
                except (OSError, asyncio.TimeoutError) as exc:
                    await _answer(client, writer, 502, f"Sandlot egress proxy: cannot reach {dest[0]}:{dest[1]}: "
                                                       f"{type(exc).__name__}")
                    return
                assert server is not None
                up_reader, up_writer = upstream
                forwarded = h11.Request(method=request.method, target=request.target, headers=headers,
                                        http_version="1.1")
                up_writer.write(server.send(forwarded))
                # the body, then the response; a 101 turns the connection into a byte pipe
                await _pump_body(client, reader, server, up_writer)
                try:
                    response = await _next_event(server, up_reader, IDLE_TIMEOUT_S)
                except h11.RemoteProtocolError:
                    await _answer(client, writer, 502, "Sandlot egress proxy: the upstream server sent no valid "
                                                       "response")
                    return
                while isinstance(response, h11.InformationalResponse) and response.status_code != 101:
                    writer.write(client.send(response))
                    response = await _next_event(server, up_reader, IDLE_TIMEOUT_S)
                if isinstance(response, h11.InformationalResponse):   # 101 Switching Protocols
                    writer.write(client.send(response))
                    writer.write(server.trailing_data[0])
                    up_writer.write(client.trailing_data[0])
                    await _splice(reader, writer, up_reader, up_writer)
                    return
                if not isinstance(response, h11.Response):
                    return
                writer.write(client.send(response))
                await _pump_body(server, up_reader, client, writer)
                await writer.drain()
                if client.our_state is h11.MUST_CLOSE or server.our_state is h11.MUST_CLOSE \
                        or server.their_state is h11.MUST_CLOSE:
                    return
                client.start_next_cycle()
                server.start_next_cycle()
        finally:
            if upstream is not None:
                upstream[1].close()

    async def _prepare(self, ctx: EgressContext, dest: tuple[str, int], tls: bool, sni: str | None,
                       request: h11.Request) -> tuple[str | None, list[tuple[bytes, bytes]]]:
        """The request's name and its headers after the matching rule's transform."""
        if request.method == b"CONNECT":
            raise Refused(405, "Sandlot egress proxy: CONNECT is not served here (the proxy is transparent)")
        host = _host_name(dict(request.headers).get(b"host"))
        if tls and sni and host and host != sni:
            raise Refused(421, "Sandlot egress proxy: the Host header does not match the TLS server name")
        name = (sni or host) if tls else host
        headers = [(k, v) for k, v in request.headers]
        rule = match(ctx.rules, name) if name else None
        if rule is None or not rule.headers:
            return name, headers
        if not tls and dest[0] not in await self._resolve(ctx.policy, name or ""):
            # plain HTTP proves nothing about the peer: only where the name really points gets a secret
            raise Refused(421, f"Sandlot egress proxy: {name} does not resolve to {dest[0]}; "
                               "the network rule's headers are only sent to the host they name")
        drop = {n.lower().encode() for n, _ in rule.headers}
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
        for header, value in rule.headers:
            headers.append((header.encode(), self._render(ctx, value)))
        return name, headers

    def _render(self, ctx: EgressContext, value: HeaderValue) -> bytes:
        out: list[str] = []
        for kind, text in value.parts:
            if kind == TEXT:
                out.append(text)
                continue
            if kind != SECRET:
                out.append(self._token(ctx, text))
                continue
            secret = self.secret(ctx.team_id, text)
            if secret is None:
                raise Refused(502, f"Sandlot egress proxy: the secret {text!r} named by a network rule does not exist")
            if any(c in secret for c in "\r\n\0"):
                raise Refused(502, f"Sandlot egress proxy: the secret {text!r} cannot be sent in a header "
                                   "(it contains a line break or NUL)")
            out.append(secret)
        return "".join(out).encode()

    def _token(self, ctx: EgressContext, name: str) -> str:
        """A fresh JWT-SVID for the sandbox's iam token ``name`` (minted here, per request)."""
        audience = ctx.tokens.get(name)
        if audience is None or self.mint is None:
            raise Refused(502, f"Sandlot egress proxy: the iam token {name!r} named by a network rule is not "
                               "defined for this sandbox")
        return self.mint(ctx, audience)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> Any:
    """The next h11 event other than NEED_DATA, reading with ``timeout`` (for the whole of it)."""
    async with asyncio.timeout(timeout):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(CHUNK)
                conn.receive_data(data)
                continue
            if event is h11.PAUSED:
                return h11.ConnectionClosed()
            return event


async def _pump_body(source: h11.Connection, reader: asyncio.StreamReader, sink: h11.Connection,
                     writer: asyncio.StreamWriter) -> None:
    """Data events from ``source`` to ``sink`` until the message ends (each read idle-bounded)."""
    while True:
        event = await _next_event(source, reader, IDLE_TIMEOUT_S)
        if isinstance(event, h11.Data):
            writer.write(sink.send(event))
            await writer.drain()
        elif isinstance(event, h11.EndOfMessage):
            writer.write(sink.send(event))
            return
        else:
            raise ConnectionError("connection closed inside a message")


async def _answer(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """The proxy's own error response, then the connection closes."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = (message + "\n").encode()
    with contextlib.suppress(h11.LocalProtocolError):
        writer.write(conn.send(h11.Response(status_code=status, headers=[
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")])))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
    with contextlib.suppress(OSError):
        await writer.drain()


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    async def one_way(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await asyncio.wait_for(src.read(CHUNK), IDLE_TIMEOUT_S)
            if not data:
                with contextlib.suppress(OSError):
                    if dst.can_write_eof():
                        dst.write_eof()
                return
            dst.write(data)
            await dst.drain()

    tasks = [asyncio.ensure_future(one_way(reader, up_writer)), asyncio.ensure_future(one_way(up_reader, writer))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
