"""Route signed ``/files`` URLs that carry no sandbox id to the sandbox that signed them.

With ``E2B_SANDBOX_URL`` set, the SDK's ``upload_url()``/``download_url()`` point at
the front door's root (``/files?path=…&signature=…``) and a plain client (curl, a
browser) sends no ``E2b-Sandbox-Id`` header. The signature is a SHA-256 over the
sandbox's envd access token, so exactly one running sandbox can have produced it:
recomputing it per sandbox finds the target (microseconds per sandbox).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs

from sandlot.protocol.auth import sign


def signer_of(method: str, query: bytes, candidates: Iterable[tuple[str, str]]) -> str | None:
    """Sandbox id whose access token produced the request's signature, if any.

    ``candidates`` are ``(sandbox_id, envd_access_token)`` pairs of running sandboxes.
    """
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    signature = params.get("signature", [""])[0]
    path = params.get("path", [""])[0]
    if not signature or not path:
        return None
    user = params.get("username", [""])[0]
    expiration_text = params.get("signature_expiration", [""])[0]
    try:
        expiration = int(expiration_text) if expiration_text else None
    except ValueError:
        return None
    operation = "read" if method in ("GET", "HEAD") else "write"
    for sandbox_id, token in candidates:
        if hmac.compare_digest(sign(path, operation, user, token, expiration), signature):
            return sandbox_id
    return None
