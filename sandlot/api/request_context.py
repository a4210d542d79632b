"""Per-request ids and accounting for the API: ``X-Request-Id``, log context, metrics by route.

A pure ASGI middleware (no per-request task or body buffering): it takes the caller's
``X-Request-Id`` when it is a plain token (1-128 of ``A-Za-z0-9._:-``; anything else is
tenant-shaped noise and replaced), else makes one, answers it in the response header, and
binds it to every log line of the request (``logging_setup.REQUEST``). The path's sandbox,
template and build ids are bound by :func:`bind_path_ids` (an app-wide dependency, after
routing); the team by ``api/auth.py`` once the key is checked. When the response has gone,
one ``request`` log line and the ``/metrics`` counters record method, *route template*
(``/sandboxes/{sandbox_id}``, never the raw path: bounded label values) and status.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Protocol

import structlog
from fastapi import Request

from sandlot.logging_setup import REQUEST, bind_request

log = structlog.get_logger("sandlot.api")

HEADER = b"x-request-id"
VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
QUIET = frozenset({"/health", "/metrics"})
"""Paths polled by monitors: counted, not logged line by line."""
PATH_IDS = {"sandbox_id": "sandbox_id", "template_id": "template_id", "build_id": "build_id"}


class RequestObserver(Protocol):
    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None: ...


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's path template, ``unmatched`` when no route took the request."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == HEADER:
            if VALID_ID.match(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


async def bind_path_ids(request: Request) -> None:
    """App-wide dependency: the path's sandbox/template/build ids join the request's log context."""
    params = request.path_params
    if params:
        bind_request(**{name: str(params[key]) for key, name in PATH_IDS.items() if key in params})


class RequestContext:
    def __init__(self, app: Any, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope.get("headers") or [])
        ids: dict[str, str] = {"request_id": request_id}
        token = REQUEST.set(ids)
        status = 500
        started = time.monotonic()

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                headers.append((HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.monotonic() - started
            route = route_template(scope)
            method = scope.get("method", "GET")
            if self.observer is not None:
                self.observer.observe_request(method, route, status, elapsed)
            if scope.get("path") not in QUIET:
                log.info("request", method=method, route=route, status=status,
                         duration_ms=round(elapsed * 1000, 1))
            ids.clear()   # tasks the request spawned keep the dict: they stop carrying its ids
            REQUEST.reset(token)
