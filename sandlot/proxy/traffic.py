"""Ingress settings of a sandbox: the traffic access token and the request host mask."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

TOKEN_HEADER = "e2b-traffic-access-token"


def traffic_token(sandbox_id: str, envd_access_token: str) -> str:
    """Derived from the sandbox's secret envd token, so it needs no column and survives restarts."""
    return hmac.new(envd_access_token.encode(), f"traffic:{sandbox_id}".encode(), hashlib.sha256).hexdigest()


def private_traffic_token(sandbox_id: str, envd_access_token: str, network: dict[str, Any] | None) -> str | None:
    """The token clients must send, or ``None`` when the sandbox accepts public traffic."""
    if (network or {}).get("allowPublicTraffic") is False:
        return traffic_token(sandbox_id, envd_access_token)
    return None


def masked_host(mask: str | None, port: int) -> str | None:
    """E2B's ``maskRequestHost``: the Host the sandbox sees, ``${PORT}`` replaced by the port."""
    if not mask:
        return None
    return mask.replace("${PORT}", str(port))
