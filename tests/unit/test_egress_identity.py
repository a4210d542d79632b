"""Workload identity (E2B ``iam``): validation of the tokens' definitions and references, and
JWT-SVIDs that verify against the published JWKS (signature, claims, key file mode)."""
from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sandlot.egress.config import ConfigError, check_identity_refs, parse_iam, parse_rules, parse_value, stored_iam
from sandlot.egress.identity import IdentityIssuer, Subject


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(token: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of an ES256 JWT whose signature verifies with the JWKS key its kid names."""
    head, body, sig = token.split(".")
    header = json.loads(_unb64(head))
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(_unb64(jwk["x"]), "big"),
                                           int.from_bytes(_unb64(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    raw = _unb64(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return header, json.loads(_unb64(body))


TOKEN = {"audience": "sts.amazonaws.com", "tokenType": "JWT-SVID"}


def test_valid_iam_is_kept_verbatim() -> None:
    tokens = parse_iam({"tokens": {"aws": TOKEN, "Odd Name!": {"audience": " x ", "tokenType": "JWT-SVID"}}})
    assert tokens == {"aws": "sts.amazonaws.com", "Odd Name!": " x "}
    assert stored_iam(tokens) == {"tokens": {"aws": TOKEN, "Odd Name!": {"audience": " x ", "tokenType": "JWT-SVID"}}}
    assert parse_iam(None) == {} and parse_iam({"tokens": {}}) == {} and stored_iam({}) is None


@pytest.mark.parametrize("iam", [
    {"tokens": {f"t{i}": TOKEN for i in range(6)}}, {"tokens": {"": TOKEN}}, {"tokens": {"a}b": TOKEN}},
    {"tokens": {"a{b": TOKEN}}, {"tokens": {"a\nb": TOKEN}}, {"tokens": {"a\x85": TOKEN}},
    {"tokens": {"aws": {"audience": "x", "tokenType": "OIDC"}}}, {"tokens": {"aws": {"audience": "x"}}},
    {"tokens": {"aws": {"audience": "", "tokenType": "JWT-SVID"}}}, {"tokens": {"aws": "JWT-SVID"}},
    {"tokens": ["aws"]}, "aws",
])
def test_invalid_iam_is_refused(iam: object) -> None:
    with pytest.raises(ConfigError):
        parse_iam(iam)


def test_rules_may_only_name_the_sandboxs_tokens() -> None:
    value = parse_value("Bearer ${e2b.identity.tokens.Aws Role} ${e2b.secrets.k}")
    assert value.parts == (("text", "Bearer "), ("identity", "Aws Role"), ("text", " "), ("secret", "k"))
    rules = parse_rules({"a.test": [{"transform": {"headers": {"Authorization": "Bearer ${e2b.identity.tokens.aws}"}}}]})
    check_identity_refs(rules, {"aws": "sts.amazonaws.com"})
    with pytest.raises(ConfigError, match="does not define"):
        check_identity_refs(rules, {"gcp": "x"})
    with pytest.raises(ConfigError):
        check_identity_refs(rules, {})


def test_minted_tokens_verify_against_the_jwks_with_the_spiffe_identity(tmp_path: Path) -> None:
    issuer = IdentityIssuer(tmp_path, "https://api.example.test/", "example.test")
    subject = Subject("team1", "sbx1", "tpl1", "exec-1")
    token = issuer.mint(subject, "sts.amazonaws.com", now=1_000_000)
    header, claims = verify(token, issuer.jwks())
    assert header["alg"] == "ES256" and header["kid"] == issuer.jwks()["keys"][0]["kid"]
    assert claims["iss"] == "https://api.example.test" == issuer.discovery()["issuer"]
    assert claims["sub"] == "spiffe://example.test/team/team1/sandbox/sbx1"
    assert claims["aud"] == "sts.amazonaws.com"
    assert claims["exp"] - claims["iat"] == 300 and claims["iat"] == 1_000_000
    assert (claims["team_id"], claims["sandbox_id"], claims["template_id"], claims["execution_id"]) == \
        ("team1", "sbx1", "tpl1", "exec-1")
    assert issuer.discovery()["jwks_uri"] == "https://api.example.test/.well-known/jwks.json"
    # a fresh token per call; the key file is private and shared by the next server on the data dir
    assert issuer.mint(subject, "sts.amazonaws.com", now=1_000_000) != token
    assert stat.S_IMODE(issuer.path.stat().st_mode) == 0o600
    again = IdentityIssuer(tmp_path, "https://api.example.test", "example.test")
    assert again.jwks() == issuer.jwks()
    verify(token, again.jwks())
    # a tampered claim does not verify
    head, body, sig = token.split(".")
    forged = dict(claims, sub="spiffe://example.test/team/other/sandbox/sbx1")
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify(f"{head}.{forged_body}.{sig}", issuer.jwks())
    assert "private" not in json.dumps(issuer.jwks()) and "d" not in issuer.jwks()["keys"][0]
