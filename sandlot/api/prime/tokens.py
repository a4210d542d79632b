"""Signed, short-lived gateway tokens: HMAC-SHA256 with a server secret, verified without the DB."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sandlot.secret_keys import data_dir_key

TOKEN_TTL_S = 3600
"""Prime tokens live about an hour; the SDK refreshes 60 s before ``expires_at``."""


@dataclass(frozen=True)
class GatewayClaims:
    sandbox_id: str
    team_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks ``payload.signature`` tokens scoped to one sandbox."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> "TokenSigner":
        """The secret lives in the data dir so tokens survive a server restart."""
        return cls(data_dir_key(data_dir, "prime-gateway.key"))

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, sandbox_id: str, team_id: str, ttl_s: int = TOKEN_TTL_S) -> tuple[str, int]:
        expires_at = int(time.time()) + ttl_s
        payload = _b64(json.dumps({"sid": sandbox_id, "tid": team_id, "exp": expires_at}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", expires_at

    def verify(self, token: str) -> GatewayClaims | None:
        """Claims of a well-signed, unexpired token; ``None`` otherwise."""
        payload, _, signature = token.partition(".")
        if not payload or not signature or not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(_unb64(payload))
            claims = GatewayClaims(str(data["sid"]), str(data["tid"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        if claims.expires_at < time.time():
            return None
        return claims
