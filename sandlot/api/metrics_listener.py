"""``SANDLOT_METRICS_LISTEN``: a second, plain-HTTP listener that serves only ``GET /metrics``.

For Prometheus set-ups that scrape without credentials over a private interface: this listener
takes no token, so bind it where only the scraper reaches (``10.0.0.5:9464``, ``127.0.0.1:9464``),
never a public address. Everything else it answers 404; a request head is capped at 16 KiB and
10 s, and every connection is closed after one answer. The API port's ``/metrics`` keeps
requiring the operator token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT_S = 10.0


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) → (host, port); ``ValueError`` when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def serve(host: str, port: int, render: Callable[[], bytes]) -> asyncio.Server:
    """Start the listener; ``render`` (the telemetry's exposition) runs in a worker thread."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            method = parts[0]
            target = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            if method in (b"GET", b"HEAD") and target == b"/metrics":
                status, kind, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), await asyncio.to_thread(render)
            else:
                status, kind, body = b"404 Not Found", b"text/plain", b"This listener serves only GET /metrics\n"
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % (status, kind, len(body)))
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=HEAD_LIMIT)
