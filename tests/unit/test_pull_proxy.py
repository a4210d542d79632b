"""The pull proxy: CONNECT only, to addresses the registry policy allows, resolved once."""

from __future__ import annotations

import asyncio

import pytest

from sandlot.templates.pull_proxy import running
from sandlot.templates.registries import RegistryPolicy


async def _echo_server() -> tuple[asyncio.base_events.Server, int, list[int]]:
    seen: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def _ask(proxy_url: str, head: bytes) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(proxy_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return await reader.readuntil(b"\r\n\r\n"), reader, writer


def test_allowed_target_is_tunnelled() -> None:
    async def main() -> None:
        server, port, seen = await _echo_server()
        async with running(RegistryPolicy(["127.0.0.1"])) as proxy:
            status, reader, writer = await _ask(proxy.url, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert status.startswith(b"HTTP/1.1 200")
            writer.write(b"ping")
            await writer.drain()
            assert await reader.read(4) == b"ping"
            writer.close()
        server.close()
        assert seen == [1]

    asyncio.run(main())


@pytest.mark.parametrize("target", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "10.255.255.1:80",
                                    "169.254.169.254:80", "192.168.1.1:443", "no-such-host.invalid:443", "garbage"])
def test_non_public_targets_are_refused_without_connecting(target: str) -> None:
    async def main() -> None:
        server, port, seen = await _echo_server()
        async with running(RegistryPolicy([])) as proxy:
            status, _, writer = await _ask(proxy.url, f"CONNECT {target.format(port=port)} HTTP/1.1\r\n\r\n".encode())
            writer.close()
            assert status.startswith(b"HTTP/1.1 403"), status
            assert proxy.refused
        server.close()
        assert seen == []

    asyncio.run(main())


def test_plain_http_requests_are_refused() -> None:
    async def main() -> None:
        server, port, seen = await _echo_server()
        async with running(RegistryPolicy(["127.0.0.1"])) as proxy:
            status, _, writer = await _ask(proxy.url, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            writer.close()
            assert status.startswith(b"HTTP/1.1 403") and "plain-HTTP" in proxy.refused[0]
        server.close()
        assert seen == []

    asyncio.run(main())
