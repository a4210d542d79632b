"""Signed webhook deliveries, off the request path, that never reach into the host's own networks.

A webhook URL is tenant-shaped, so the sender treats it as an attack: the name is resolved
once, *every* address it resolves to must be public (not loopback, private, link-local or
metadata, shared, multicast, reserved, the sandbox subnet or one of the host's own
addresses) unless the operator allow-lists it (``SANDLOT_WEBHOOK_ALLOW_PRIVATE``), and the
request goes to the checked address itself (``Host`` and TLS SNI keep the name), so a second
resolution can't point it elsewhere. Redirects are never followed (a 3xx is a failed
attempt), no proxy from the environment is used, and the response body is never read.

Deliveries wait in a bounded queue served by a few workers; a failed attempt is retried
with exponential back-off up to ``SANDLOT_WEBHOOK_MAX_ATTEMPTS``. Lifecycle operations only
ever ``submit`` (no await, no I/O): a slow or hostile receiver delays nothing but its own
deliveries.

Signature (E2B's ``e2b-signature-version: v1``): URL-safe base64 without padding of
SHA-256(secret bytes + raw body).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import structlog

from sandlot.settings import Settings

log = structlog.get_logger("sandlot.webhooks")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
WORKERS = 2
OUTCOMES_KEPT = 256
USER_AGENT = "Sandlot-Webhooks/1"
METADATA: tuple[Network, ...] = (ipaddress.ip_network("168.63.129.16/32"),)
"""Cloud metadata/host services at public addresses (Azure's wireserver); the others
(169.254.169.254, fd00:ec2::254, 100.100.100.200) are in non-public ranges already."""


class UnsafeTarget(Exception):
    """A webhook URL that is malformed or points where deliveries may not go."""


def signature(secret: str, body: bytes) -> str:
    """E2B's v1 webhook signature of ``body``."""
    digest = hashlib.sha256(secret.encode() + body).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    """Lower-case name or IP literal (without brackets)."""
    port: int
    path: str
    """Path and query, as sent."""


def parse_url(url: str) -> Target:
    """A webhook URL's parts; :class:`UnsafeTarget` for anything but a plain http(s) URL."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"webhook url must be 1-{MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7f for c in url):
        raise UnsafeTarget("webhook url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeTarget("webhook url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("webhook url must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("webhook url must not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeTarget("webhook url has no host")
    if port == 0:
        raise UnsafeTarget("webhook url has an invalid port")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)


def _is_local(address: Address) -> bool:
    """One of this host's own addresses (binding to it works only then)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


class TargetPolicy:
    """Where deliveries may go: public addresses, plus what the operator allow-lists."""

    def __init__(self, allow: list[str], sandbox_subnet: str) -> None:
        self.allow: list[Network] = [ipaddress.ip_network(entry, strict=False) for entry in allow]
        self.sandboxes: Network = ipaddress.ip_network(sandbox_subnet, strict=False)

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be reached (``None``: it may)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address.version == net.version and address in net for net in self.allow):
            return None
        if address.version == self.sandboxes.version and address in self.sandboxes:
            return "the sandbox network"
        if any(address.version == net.version and address in net for net in METADATA):
            return "a cloud metadata address"
        if not address.is_global or address.is_multicast:
            return "a loopback/private/link-local/reserved address"
        if _is_local(address):
            return "an address of this host"
        return None

    def check_literal(self, target: Target) -> None:
        """Refuse at registration a URL whose host is a forbidden IP literal (names are checked
        at every delivery, since what they resolve to may change)."""
        try:
            address = ipaddress.ip_address(target.host)
        except ValueError:
            if target.host == "localhost" or target.host.endswith(".localhost"):
                address = ipaddress.IPv4Address("127.0.0.1")
            else:
                return
        reason = self.refusal(address)
        if reason is not None:
            raise UnsafeTarget(f"webhook url points at {reason}; deliveries only go to public addresses "
                               "(the operator may allow-list others: SANDLOT_WEBHOOK_ALLOW_PRIVATE)")

    async def resolve(self, target: Target) -> Address:
        """The one address to connect to: every address the host resolves to must be allowed."""
        try:
            addresses: list[Address] = [ipaddress.ip_address(target.host)]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise UnsafeTarget(f"dns_error: {target.host} does not resolve ({exc})") from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise UnsafeTarget(f"dns_error: {target.host} has no address")
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                raise UnsafeTarget(f"{target.host} resolves to {address}, {reason}")
        return addresses[0]


@dataclass
class Delivery:
    """One event for one webhook; ``attempts`` counts what was tried."""

    webhook_id: str
    event_id: str
    event_type: str
    sandbox_id: str
    url: str
    secret: str
    body: bytes
    attempts: int = 0
    final: bool = False
    """No retry: the target is refused (a retry would be refused again)."""


@dataclass(frozen=True)
class Outcome:
    """One attempt, kept in memory (the newest ``OUTCOMES_KEPT``) for ``GET …/deliveries``."""

    webhook_id: str
    event_id: str
    event_type: str
    sandbox_id: str
    delivery_id: str
    attempt: int
    ok: bool
    status: int | None
    error: str | None
    duration_ms: int

    @property
    def error_class(self) -> str | None:
        """E2B's ``errorClass`` (a refused target is a ``request_error``)."""
        if self.error is None:
            return None
        kind = self.error.split(":", 1)[0]
        return kind if kind in ("http_error", "dns_error", "timeout", "transport_error") else "request_error"


class WebhookSender:
    """A bounded queue of deliveries, a few workers, retries with exponential back-off."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self.policy = TargetPolicy(settings.webhook_allow_private, settings.sandbox_subnet)
        self.capacity = max(1, settings.webhook_queue_size)
        self.max_attempts = max(1, settings.webhook_max_attempts)
        self.retry_base_s = settings.webhook_retry_base_s
        self.timeout_s = settings.webhook_timeout_s
        self.client = client or httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=settings.webhook_timeout_s,
            limits=httpx.Limits(max_connections=WORKERS * 4, max_keepalive_connections=0))
        self.outcomes: deque[Outcome] = deque(maxlen=OUTCOMES_KEPT)
        self.dropped = 0
        self._queue: asyncio.Queue[Delivery] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._busy = 0
        self._idle: asyncio.Event | None = None

    # --- the lifecycle side: never waits -------------------------------------------------------

    @property
    def pending(self) -> int:
        """Deliveries queued, waiting for a retry or being attempted."""
        return (self._queue.qsize() if self._queue is not None else 0) + len(self._timers) + self._busy

    def submit(self, delivery: Delivery) -> bool:
        """Queue a delivery (``False``: the queue is full and it is dropped)."""
        if self.pending >= self.capacity:
            self.dropped += 1
            log.warning("webhook queue full: delivery dropped", webhook_id=delivery.webhook_id,
                        event_id=delivery.event_id)
            return False
        self._start()
        assert self._queue is not None and self._idle is not None
        self._idle.clear()
        self._queue.put_nowait(delivery)
        return True

    def _start(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._idle = asyncio.Event()
            self._idle.set()
            self._workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    # --- the workers ----------------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            delivery = await self._queue.get()
            self._busy += 1
            try:
                ok = await self.attempt(delivery)
                if not ok and not delivery.final and delivery.attempts < self.max_attempts:
                    self._retry_later(delivery)
            except Exception:   # a bug in one delivery never stops the workers
                log.exception("webhook delivery failed", webhook_id=delivery.webhook_id)
            finally:
                self._busy -= 1
                self._check_idle()

    def _retry_later(self, delivery: Delivery) -> None:
        delay = self.retry_base_s * (2 ** (delivery.attempts - 1))
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def requeue() -> None:
            self._timers.discard(handle)
            if self._queue is not None:
                self._queue.put_nowait(delivery)

        handle = loop.call_later(delay, requeue)
        self._timers.add(handle)

    def _check_idle(self) -> None:
        if self._idle is not None and self.pending == 0:
            self._idle.set()

    async def attempt(self, delivery: Delivery) -> bool:
        """One signed POST to the checked address; whether the receiver answered 2xx."""
        delivery.attempts += 1
        delivery_id = str(uuid.uuid4())
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            target = parse_url(delivery.url)
            address = await self.policy.resolve(target)
            host = f"[{address}]" if address.version == 6 else str(address)
            url = f"{target.scheme}://{host}:{target.port}{target.path}"
            name = f"[{target.host}]" if ":" in target.host else target.host
            default_port = 443 if target.scheme == "https" else 80
            headers = {
                "Host": name if target.port == default_port else f"{name}:{target.port}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "e2b-webhook-id": delivery.webhook_id,
                "e2b-delivery-id": delivery_id,
                "e2b-signature-version": "v1",
                "e2b-signature": signature(delivery.secret, delivery.body),
            }
            request = self.client.build_request("POST", url, content=delivery.body, headers=headers,
                                                extensions={"sni_hostname": target.host})
            async with asyncio.timeout(self.timeout_s):   # whole attempt: a dribbling receiver can't hold a worker
                response = await self.client.send(request, stream=True)   # the body is never read
                await response.aclose()
            status = response.status_code
            if not 200 <= status < 300:
                error = f"http_error: {status}"
        except UnsafeTarget as exc:
            error = str(exc) if str(exc).startswith("dns_error") else f"refused: {exc}"
            delivery.final = not error.startswith("dns_error")
        except (httpx.TimeoutException, TimeoutError):
            error = "timeout"
        except httpx.HTTPError as exc:
            error = f"transport_error: {type(exc).__name__}"
        ok = error is None
        self.outcomes.append(Outcome(delivery.webhook_id, delivery.event_id, delivery.event_type,
                                     delivery.sandbox_id, delivery_id, delivery.attempts, ok, status, error,
                                     int((time.monotonic() - started) * 1000)))
        if not ok:
            log.info("webhook delivery attempt failed", webhook_id=delivery.webhook_id,
                     event_id=delivery.event_id, attempt=delivery.attempts, error=error)
        return ok

    # --- tests and shutdown -----------------------------------------------------------------------

    async def drain(self) -> None:
        """Until nothing is queued, waiting for a retry or in flight (tests: no sleeping)."""
        while self._idle is not None and self.pending:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        """Stop: pending deliveries are dropped (they are best-effort, like E2B's)."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers = []
        self._queue = None
        await self.client.aclose()
