"""Workload identity (E2B's ``iam``): the per-server key that signs JWT-SVIDs, and the OIDC
documents an audience (an AWS IAM OIDC provider, say) trusts them by.

The key is EC P-256 (ES256), kept in ``<data dir>/egress-ca/identity.key`` (0600, never mounted
into a sandbox) next to the egress CA. Tokens are minted by the egress proxy per request, for a
rule header that names ``${e2b.identity.tokens.<name>}``, and never enter the sandbox.

SPIFFE id layout: ``spiffe://<trust domain>/team/<team id>/sandbox/<sandbox id>``; the template
and execution ids ride along as the ``template_id`` and ``execution_id`` claims.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sandlot.egress.ca import CA_DIR, write_file

KEY_FILE = "identity.key"
TOKEN_TTL_S = 300
"""Minted per request, so short-lived: a leaked token is worth five minutes."""
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Subject:
    """Whose token: the identity a JWT-SVID asserts."""

    team_id: str
    sandbox_id: str
    template_id: str
    execution_id: str | None


class IdentityIssuer:
    """Signs JWT-SVIDs with the server's identity key (made on first use, shared by servers on
    one data dir) and describes the key as OIDC discovery + JWKS."""

    def __init__(self, data_dir: Path, issuer: str, trust_domain: str, ttl_s: int = TOKEN_TTL_S) -> None:
        self.path = data_dir / CA_DIR / KEY_FILE
        self.issuer = issuer.rstrip("/")
        self.trust_domain = trust_domain
        self.ttl_s = ttl_s
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._jwk: dict[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create()
            return self._key

    def _load_or_create(self) -> ec.EllipticCurvePrivateKey:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                key = serialization.load_pem_private_key(self.path.read_bytes(), None)
                if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                    raise ValueError(f"{self.path}: an EC P-256 key is expected")
                return key
            fresh = ec.generate_private_key(ec.SECP256R1())
            write_file(self.path, fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), 0o600)
            return fresh

    def public_jwk(self) -> dict[str, str]:
        if self._jwk is None:
            self._jwk = self._make_jwk()
        return dict(self._jwk)

    def _make_jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        jwk = {"crv": "P-256", "kty": "EC", "x": b64url(numbers.x.to_bytes(32, "big")),
               "y": b64url(numbers.y.to_bytes(32, "big"))}
        # RFC 7638 thumbprint: the required members, sorted, no whitespace
        kid = b64url(hashlib.sha256(json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()).digest())
        return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "claims_supported": ["sub", "aud", "exp", "iat", "nbf", "iss", "jti", "team_id", "sandbox_id",
                                 "template_id", "execution_id"],
        }

    def spiffe_id(self, subject: Subject) -> str:
        return f"spiffe://{self.trust_domain}/team/{subject.team_id}/sandbox/{subject.sandbox_id}"

    def mint(self, subject: Subject, audience: str, now: float | None = None) -> str:
        """A JWT-SVID for ``subject`` with ``aud`` = ``audience`` (verbatim), valid ``ttl_s``."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": self.spiffe_id(subject), "aud": audience,
            "iat": issued, "nbf": issued, "exp": issued + self.ttl_s, "jti": str(uuid.uuid4()),
            "team_id": subject.team_id, "sandbox_id": subject.sandbox_id, "template_id": subject.template_id,
        }
        if subject.execution_id:
            claims["execution_id"] = subject.execution_id
        header = {"alg": "ES256", "typ": "JWT", "kid": self.public_jwk()["kid"]}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
