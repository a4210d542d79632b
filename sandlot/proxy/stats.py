"""Front-door traffic counters: plain integers bumped on the data path, read at scrape time.

Why plain ints and not Prometheus counters: the relay is the hot path (a few µs per request
matter, ``docs/performance.md``), and a ``prometheus_client`` counter takes a lock per
increment. These are only ever bumped from the event loop's thread, so ``+=`` is enough;
the ``/metrics`` collector (``sandlot/api/metrics.py``) turns them into counters. No
per-sandbox labels: the number of sandboxes is unbounded.
"""

from __future__ import annotations


class TrafficStats:
    """Requests and bytes through the front door, by the path they took."""

    __slots__ = ("relayed", "proxied", "websockets", "bytes_to_sandbox", "bytes_from_sandbox")

    def __init__(self) -> None:
        self.relayed = 0
        """HTTP requests on the raw byte relay (``relay.py``)."""
        self.proxied = 0
        """HTTP requests through the ASGI front door (``frontdoor.py``)."""
        self.websockets = 0
        """WebSocket connections to sandboxes."""
        self.bytes_to_sandbox = 0
        """Request heads and bodies written to sandboxes (relay) or their bodies (ASGI path)."""
        self.bytes_from_sandbox = 0
        """Response heads and bodies written to clients (relay) or their bodies (ASGI path)."""
