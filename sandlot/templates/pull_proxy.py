"""A CONNECT-only proxy on loopback that every skopeo connection goes through.

Checking the registry a tenant names is not enough: the registry answers redirects (blob
downloads normally go to a CDN, token services live elsewhere) and its name can resolve
differently when skopeo connects than when it was checked (DNS rebinding). skopeo (Go)
honours ``HTTPS_PROXY``/``HTTP_PROXY``, so each pull gets this proxy: it resolves every
``CONNECT host:port`` itself, applies the same registry policy to the addresses
(public, or allow-listed by the operator) and connects to the address it checked. Plain
``http://`` requests through it (absolute-form) are refused: public registries are
spoken to over HTTPS, and the operator's allow-listed ones are in ``NO_PROXY``.

Go never proxies ``localhost`` or loopback literals: ``pull_netns`` runs skopeo in a network
namespace where those lead nowhere and reaches this proxy through its unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from sandlot.templates.registries import ReferenceError, RegistryPolicy, addresses_of

MAX_HEAD = 8192
CONNECT_TIMEOUT_S = 30


class PullProxy:
    def __init__(self, policy: RegistryPolicy) -> None:
        self.policy = policy
        self.refused: list[str] = []
        """Why connections were refused (the pull's error message names the first)."""
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self, unix_path: Path | None = None) -> None:
        """On loopback TCP, or on a unix socket (which ``pull_netns`` reaches from skopeo's
        own network namespace)."""
        if unix_path is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        else:
            self._server = await asyncio.start_unix_server(self._handle, str(unix_path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        target = rest.split(" ", 1)[0]
        if method != "CONNECT":
            self.refused.append(f"a plain-HTTP request to {target[:200]} (only HTTPS leaves through the pull proxy)")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            host, port = _split(target)
            address = await self._vet(host, port)
        except ReferenceError as exc:
            self.refused.append(str(exc))
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(str(address), port), CONNECT_TIMEOUT_S)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _vet(self, host: str, port: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ReferenceError(f"'{host}' does not resolve: {exc.strerror or exc}") from None
            addresses = addresses_of(infos)
        self.policy.vet(host, port, addresses, what="a connection to")
        return addresses[0]


def _split(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ReferenceError(f"malformed CONNECT target '{target[:200]}'")
    return host.strip("[]"), int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


@contextlib.asynccontextmanager
async def running(policy: RegistryPolicy, unix_path: Path | None = None) -> AsyncIterator[PullProxy]:
    proxy = PullProxy(policy)
    await proxy.start(unix_path)
    try:
        yield proxy
    finally:
        await proxy.close()
