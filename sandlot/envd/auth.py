"""envd's side of access control: the access token and signed /files URLs (spec §3.4, §3.6).

The signature and header formats the host shares live in :mod:`sandlot.protocol.auth`.
"""

from __future__ import annotations

import hmac
import time

from sandlot.protocol.auth import sign

UNAUTHORIZED_MESSAGE = "unauthorized access, please provide a valid access token or method signing if supported"


def token_ok(expected: str | None, given: str | None) -> bool:
    """True when no token is configured or the given one matches (constant time)."""
    if not expected:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


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
