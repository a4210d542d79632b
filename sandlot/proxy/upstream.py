"""The upstream address of proxied traffic: always exactly (sandbox IP, port).

The client's request target is data, never authority. It must be origin-form
(``/path?query``; ``*`` only for ``OPTIONS``): an absolute-form, authority-form,
``@host``, ``//host`` or ``\\``-bearing target is refused before anything is built,
and the upstream URL is assembled from components (scheme, IP, port, raw path) so no
byte of the target can become userinfo, host or port. The result is checked once more
against the intended IP and port, so a parser surprise fails closed.
"""

from __future__ import annotations

import httpx
from websockets.uri import parse_uri

_PATH_BYTES = frozenset(range(0x21, 0x7F)) - frozenset(b"#\\")
"""Visible ASCII minus the fragment mark and backslash (which some URL parsers read as ``/``)."""
_QUERY_BYTES = _PATH_BYTES


class BadRequestTarget(ValueError):
    """The request line's target is not origin-form (or otherwise unusable)."""


def is_asterisk(method: str, raw_path: bytes) -> bool:
    """``OPTIONS *``: a question about the front door itself, never forwarded."""
    return raw_path == b"*" and method == "OPTIONS"


def check_target(method: str, raw_path: bytes, query: bytes) -> None:
    """Refuse anything but an origin-form target (and ``OPTIONS *``)."""
    if is_asterisk(method, raw_path) and not query:
        return
    if not raw_path.startswith(b"/"):
        raise BadRequestTarget("The request target must be an absolute path (origin-form), e.g. /index.html")
    if raw_path.startswith(b"//"):
        raise BadRequestTarget("The request target must not start with //")
    if not set(raw_path) <= _PATH_BYTES:
        raise BadRequestTarget("The request target contains characters that are not allowed")
    if query and not set(query) <= _QUERY_BYTES:
        raise BadRequestTarget("The query string contains characters that are not allowed")


def _path_and_query(raw_path: bytes, query: bytes) -> bytes:
    return raw_path + (b"?" + query if query else b"")


def http_url(ip: str, port: int, raw_path: bytes, query: bytes, *, tls: bool = False) -> httpx.URL:
    """``http://{ip}:{port}{raw_path}?{query}`` built from parts (``https`` for a TLS port);
    ``check_target`` first.

    httpx removes dot segments (``/a/../b`` → ``/b``), which stays inside the sandbox."""
    url = httpx.URL(scheme="https" if tls else "http", host=ip, port=port, raw_path=_path_and_query(raw_path, query))
    if url.host != ip or (url.port or (443 if tls else 80)) != port or url.userinfo:
        raise BadRequestTarget("The request target does not resolve to the sandbox")
    return url


def websocket_url(ip: str, port: int, raw_path: bytes, query: bytes, *, tls: bool = False) -> str:
    """``ws://{ip}:{port}{raw_path}?{query}`` (``wss`` for a TLS port) for the websockets client,
    checked the same way."""
    url = "%s://%s:%d%s" % ("wss" if tls else "ws", ip, port, _path_and_query(raw_path, query).decode("ascii"))
    parsed = parse_uri(url)
    if parsed.host != ip or parsed.port != port or parsed.username is not None:
        raise BadRequestTarget("The request target does not resolve to the sandbox")
    return url
