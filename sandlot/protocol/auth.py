"""How a request proves it may talk to envd: what the host sends and envd checks (spec §3.4, §3.6).

Both sides import these, so a signed ``/files`` URL the front door attributes to a sandbox is
exactly the one that sandbox's envd accepts.
"""

from __future__ import annotations

import base64
import hashlib

ACCESS_TOKEN_HEADER = "X-Access-Token"
"""envd's access token (``envdAccessToken``), on every request once the sandbox has one."""


def sign(path: str, operation: str, user: str, token: str, expiration: int | None) -> str:
    """Signature of a ``/files`` URL; same algorithm as e2b/sandbox/signature.py."""
    raw = f"{path}:{operation}:{user}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode()).digest()
    return "v1_" + base64.b64encode(digest).rstrip(b"=").decode()


def basic_auth(user: str) -> str:
    """``Authorization`` value that selects ``user`` (no password: the token is the secret)."""
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


def basic_auth_username(header: str | None) -> str | None:
    """Username from ``Authorization: Basic base64("name:")``; None when absent/garbled."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None
