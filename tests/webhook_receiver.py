"""A loopback HTTP server that records what webhook deliveries (or attacks) reach it.

Used as the legitimate receiver (allow-listed by the operator setting) and as the canary the
security tests check is never reached."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    host: str
    port: int
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    """Status of each next answer (then 200), e.g. ``[500, 500]`` fails twice."""
    redirect_to: str | None = None
    """Answer every request with a 302 to this URL."""
    hold: threading.Event | None = None
    """When set up, answers wait until the event is set (a slow receiver)."""
    got: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook?x=1"

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[Received]:
        """Block until ``count`` requests arrived (or the deadline passed); what arrived."""
        with self.got:
            self.got.wait_for(lambda: len(self.requests) >= count, timeout=timeout_s)
            return list(self.requests)


def e2b_signature(secret: str, body: bytes) -> str:
    """E2B's documented v1 signature, computed independently of Sandlot's code."""
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode() + body).digest()).rstrip(b"=").decode()


@contextmanager
def receiver(host: str = "127.0.0.1") -> Iterator[Receiver]:
    state = Receiver(host, 0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._record()

        def do_GET(self) -> None:
            self._record()

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with state.got:
                state.requests.append(Received(self.command, self.path,
                                               {k.lower(): v for k, v in self.headers.items()}, body))
                status = state.statuses.pop(0) if state.statuses else 200
                state.got.notify_all()
            if state.hold is not None:
                state.hold.wait(timeout=120)
            if state.redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", state.redirect_to)
            else:
                self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.shutdown()
        server.server_close()
