"""Who may reach a sandbox port: the traffic token and the code-interpreter guard.

Shared by the ASGI front door and the raw relay, so both paths apply the same rules to
the same header pairs (names in any case, values as raw bytes).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from sandlot.proxy.routes import Route
from sandlot.proxy.traffic import TOKEN_HEADER

CODE_INTERPRETER_PORT = 49999
"""E2B's Jupyter port: it runs code, so it is guarded by the envd access token (see :func:`ci_refusal`)."""
_CI_OPEN = re.compile(r"GET /health|GET /contexts|POST /contexts|POST /contexts/[A-Za-z0-9_-]{1,128}/restart"
                      r"|DELETE /contexts/[A-Za-z0-9_-]{1,128}")
"""Code-interpreter calls the SDK sends without ``X-Access-Token`` (context management, health);
everything else on that port — ``/execute`` and anything unknown — needs the token."""
_TOKEN_NAME = TOKEN_HEADER.encode()


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The header's value; a repeated credential header counts as a wrong one (``b""``)."""
    values = [v for k, v in headers if k.lower() == name]
    if len(values) > 1:
        return b""
    return values[0] if values else None


def token_refusal(headers: Iterable[tuple[bytes, bytes]], route: Route, port: int, envd_port: int) -> str | None:
    """Why a private sandbox (allowPublicTraffic=false) refuses this request, if it does.

    envd's own port is guarded by the envd access token instead, as in E2B."""
    if route.traffic_token is None or port == envd_port:
        return None
    sent = header(headers, _TOKEN_NAME)
    if sent is None:
        return f"Missing {TOKEN_HEADER} header: this sandbox does not accept public traffic"
    if not hmac.compare_digest(sent, route.traffic_token.encode()):
        return f"Invalid {TOKEN_HEADER} header"
    return None


def ci_refusal(method: str | None, headers: Iterable[tuple[bytes, bytes]], route: Route, url_path: bytes) -> str | None:
    """Why the code interpreter refuses this request, if it does (``method`` is ``None`` for a WebSocket).

    As with E2B's SDK, ``/execute`` carries the envd access token (``X-Access-Token``):
    knowing a sandbox id is not enough to run code in it. A token that is sent must be right."""
    if not route.access_token:
        return None
    sent = header(headers, b"x-access-token")
    if sent is not None:
        return None if hmac.compare_digest(sent, route.access_token.encode()) else "Invalid X-Access-Token header"
    if method is not None and _CI_OPEN.fullmatch(f"{method} {url_path.decode('ascii')}"):
        return None
    return "Missing X-Access-Token header: the code interpreter needs the sandbox's envd access token"
