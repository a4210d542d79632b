"""Which headers cross the front door, in each direction.

A sandbox is a tenant: its response headers must only speak for its own response.
Hop-by-hop headers (and any header a ``Connection`` header names) stay on their hop,
so a sandbox can't steer the front door's or the client's connection handling;
``Set-Cookie`` loses its ``Domain`` attribute, so a cookie is host-only and can't be
scoped to the shared domain or to other sandboxes' hosts; ``Alt-Svc`` could point
clients at another endpoint for the front door's origin and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

NODE_TOKEN = b"x-sandlot-node-token"
"""API instance → node agent credential (scale-out): checked by the node, never passed to a sandbox."""
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade", NODE_TOKEN,
})
_NEVER_FROM_SANDBOX = frozenset({b"alt-svc"})


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection`` (RFC 9110 §7.6.1: they are hop-by-hop too)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return named


def to_sandbox(headers: Headers, host: str | None) -> Headers:
    """Client → sandbox: end-to-end headers only; ``Host`` is the masked one or httpx's ``ip:port``."""
    drop = HOP_BY_HOP | {b"host"} | _connection_named(headers)
    if any(k.lower() == b"transfer-encoding" for k, _ in headers):  # de-chunked by uvicorn: the length is httpx's
        drop = drop | {b"content-length"}
    forwarded = [(k, v) for k, v in headers if k.lower() not in drop]
    if host:
        forwarded.append((b"host", host.encode("latin-1")))
    return forwarded


def host_only_cookie(value: bytes) -> bytes:
    """``Set-Cookie`` without any ``Domain`` attribute (cookie values can't contain ``;``)."""
    name_value, *attributes = value.split(b";")
    kept = [a for a in attributes if a.split(b"=", 1)[0].strip().lower() != b"domain"]
    return b";".join([name_value, *kept])


def from_sandbox(headers: Headers) -> Headers:
    """Sandbox → client: end-to-end headers, cookies host-only."""
    drop = HOP_BY_HOP | _NEVER_FROM_SANDBOX | _connection_named(headers)
    chunked = any(k.lower() == b"transfer-encoding" for k, _ in headers)
    if chunked:  # the body was de-chunked by httpx: a Content-Length next to it can't be trusted
        drop = drop | {b"content-length"}
    out: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in drop:
            continue
        if lower == b"set-cookie":
            value = host_only_cookie(value)
        out.append((name, value))
    return out


def node_token_ok(headers: Iterable[tuple[bytes, bytes]], token: bytes) -> bool:
    """Exactly one ``X-Sandlot-Node-Token`` and it is ``token`` (constant-time compare)."""
    import hmac

    sent = [value for name, value in headers if name.lower() == NODE_TOKEN]
    return len(sent) == 1 and hmac.compare_digest(sent[0], token)
