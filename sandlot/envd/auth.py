"""Access-token, Basic-auth user selection and signed /files URL checks (spec §3.4, §3.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

UNAUTHORIZED_MESSAGE = "unauthorized access, please provide a valid access token or method signing if supported"


def token_ok(expected: str | None, given: str | None) -> bool:
    """True when no token is configured or the given one matches (constant time)."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def basic_auth_username(header: str | None) -> str | None:
    """Username from ``Authorization: Basic base64("name:")``; None when absent/garbled."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def sign(path: str, operation: str, user: str, token: str, expiration: int | None) -> str:
    """Same algorithm as e2b/sandbox/signature.py."""
    raw = f"{path}:{operation}:{user}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode()).digest()
    return "v1_" + base64.b64encode(digest).rstrip(b"=").decode()


def check_files_access(
    *,
    token: str | None,
    header_token: str | None,
    path: str,
    operation: str,
    username: str,
    signature: str | None,
    expiration: str | None,
) -> str | None:
    """Return an error message for a /files request, or None if it is allowed."""
    if not token:
        return None
    if header_token is not None:
        return None if token_ok(token, header_token) else UNAUTHORIZED_MESSAGE
    if not signature:
        return "missing signature query parameter"
    exp: int | None = None
    if expiration:
        try:
            exp = int(expiration)
        except ValueError:
            return "invalid signature expiration"
    expected = sign(path, operation, username, token, exp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "invalid signature"
    if exp is not None and exp < int(time.time()):
        return "signature is already expired"
    return None
