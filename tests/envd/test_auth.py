"""Access token and signed-URL enforcement."""

from __future__ import annotations


import httpx
import pytest
from e2b.exceptions import AuthenticationException
from e2b.sandbox.signature import get_signature

from .conftest import TOKEN

UNAUTHORIZED = {"code": 401, "message": "unauthorized access, please provide a valid access token or method signing if supported"}


def test_rpc_requires_token(envd_token):
    with pytest.raises(AuthenticationException):
        envd_token.sandbox().commands.run("true")
    with pytest.raises(AuthenticationException):
        envd_token.sandbox("wrong").files.list("/")
    assert envd_token.sandbox(TOKEN).commands.run("echo ok").stdout == "ok\n"


def test_plain_routes(envd_token):
    assert httpx.get(envd_token.url + "/health").status_code == 204
    r = httpx.get(envd_token.url + "/envs")
    assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
    assert httpx.get(envd_token.url + "/envs", headers={"X-Access-Token": TOKEN}).status_code == 200


def test_files_token_or_signature(envd_token):
    sbx = envd_token.sandbox(TOKEN)
    sbx.files.write("/tmp/envd-signed.txt", "signed")
    assert sbx.files.read("/tmp/envd-signed.txt") == "signed"  # header token
    assert httpx.get(sbx.download_url("/tmp/envd-signed.txt")).text == "signed"
    assert httpx.get(sbx.download_url("/tmp/envd-signed.txt", use_signature_expiration=60)).text == "signed"
    up = httpx.post(sbx.upload_url("/tmp/envd-signed2.txt"), files={"file": ("envd-signed2.txt", b"up")})
    assert up.status_code == 200, up.text
    assert sbx.files.read("/tmp/envd-signed2.txt") == "up"

    bare = envd_token.url + "/files"
    assert httpx.get(bare, params={"path": "/tmp/envd-signed.txt"}).status_code == 401
    r = httpx.get(bare, params={"path": "/tmp/envd-signed.txt", "signature": "v1_bogus"})
    assert (r.status_code, r.json()["message"]) == (401, "invalid signature")
    r = httpx.get(bare, params={"path": "/tmp/envd-signed.txt"}, headers={"X-Access-Token": "wrong"})
    assert r.status_code == 401
    sig = get_signature("/tmp/envd-signed.txt", "read", None, TOKEN, -10)
    r = httpx.get(bare, params={"path": "/tmp/envd-signed.txt", "signature": sig["signature"],
                                "signature_expiration": sig["expiration"]})
    assert (r.status_code, r.json()) == (401, {"code": 401, "message": "signature is already expired"})
    # signature for "read" is not valid for "write"
    sig = get_signature("/tmp/x", "read", None, TOKEN)
    r = httpx.post(bare, params={"path": "/tmp/x", "signature": sig["signature"]}, content=b"x",
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 401
    sbx.files.remove("/tmp/envd-signed.txt")
    sbx.files.remove("/tmp/envd-signed2.txt")


def test_init_is_idempotent(envd_token):
    body = {"accessToken": TOKEN, "envVars": {"A": "1"}}
    for _ in range(2):
        assert httpx.post(envd_token.url + "/init", json=body, headers={"X-Access-Token": TOKEN}).status_code == 204
    r = httpx.get(envd_token.url + "/envs", headers={"X-Access-Token": TOKEN})
    assert r.json() == {"A": "1"}


def test_startup_time(envd):
    print(f"envd start-up to first /health 204: {envd.startup_seconds:.3f}s")
    assert envd.startup_seconds < 5


def test_init_needs_the_current_token(envd_token):
    """Nobody but the token holder may re-initialise envd (and so swap the token)."""
    hijack = {"accessToken": "attacker", "envVars": {}}
    assert httpx.post(envd_token.url + "/init", json=hijack).status_code == 401
    wrong = httpx.post(envd_token.url + "/init", json=hijack, headers={"X-Access-Token": "nope"})
    assert wrong.status_code == 401
    assert httpx.get(envd_token.url + "/envs", headers={"X-Access-Token": TOKEN}).status_code == 200
