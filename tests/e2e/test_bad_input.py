"""Bad requests get clear E2B-shaped errors; failures leave nothing behind."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.server import Server


def _api(server: Server, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key or server.api_key}, timeout=60)


def _assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and isinstance(body["message"], str) and body["message"]
    return body


def test_api_key_required(server: Server) -> None:
    _assert_error(httpx.get(f"{server.url}/v2/sandboxes"), 401)
    _assert_error(httpx.get(f"{server.url}/v2/sandboxes", headers={"X-API-Key": "e2b_" + "0" * 40}), 401)
    ok = httpx.get(f"{server.url}/v2/sandboxes", headers={"Authorization": f"Bearer {server.api_key}"})
    assert ok.status_code == 200


def test_malformed_json(server: Server) -> None:
    with _api(server) as api:
        response = api.post("/v2/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"})
        _assert_error(response, 400)
        _assert_error(api.post("/v2/sandboxes", json={"timeout": 10}), 400)
        _assert_error(api.post("/v2/sandboxes", json={"templateID": 5}), 400)
        _assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "metadata": {"a": 1}}), 400)


def test_unknown_template(server: Server) -> None:
    with _api(server) as api:
        body = _assert_error(api.post("/v2/sandboxes", json={"templateID": "no-such-template"}), 404)
        assert "no-such-template" in body["message"]


@pytest.mark.parametrize("timeout", [-1, 0, 10**9])
def test_bad_timeouts(server: Server, timeout: int) -> None:
    with _api(server) as api:
        _assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "timeout": timeout}), 400)


def test_unknown_sandbox(server: Server) -> None:
    with _api(server) as api:
        _assert_error(api.get("/sandboxes/iunknown0000000000000"), 404)
        _assert_error(api.delete("/sandboxes/iunknown0000000000000"), 404)
        _assert_error(api.post("/sandboxes/iunknown0000000000000/timeout", json={"timeout": 30}), 404)
        _assert_error(api.post("/v2/sandboxes/iunknown0000000000000/connect", json={}), 404)
        _assert_error(api.get("/no/such/route"), 404)
    proxied = httpx.get(
        f"{server.url}/health", headers={"E2b-Sandbox-Id": "iunknown0000000000000", "E2b-Sandbox-Port": "49983"}
    )
    body = _assert_error(proxied, 502)
    assert body["message"] == "The sandbox was not found"


def test_unsupported_features_fail_loudly(server: Server) -> None:
    with _api(server) as api:
        # autoPause is supported (issue 4); autoResume without it is not
        _assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "autoResume": {"enabled": True}}), 400)
        # egress policies are supported (issue 5); an egress proxy and request transforms are not
        egress_proxy = {"egressProxy": {"address": "127.0.0.1:1080"}}
        _assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "network": egress_proxy}), 400)
        domain_without_deny_all = {"allowOut": ["pypi.org"]}
        _assert_error(api.post("/v2/sandboxes", json={"templateID": "base", "network": domain_without_deny_all}), 400)


def test_idempotency_key_replays_the_create(server: Server) -> None:
    with _api(server) as api:
        headers = {"Idempotency-Key": "create-once-123"}
        first = api.post("/v2/sandboxes", json={"templateID": "base", "metadata": {"k": "v"}}, headers=headers)
        again = api.post("/v2/sandboxes", json={"templateID": "base", "metadata": {"k": "v"}}, headers=headers)
        try:
            assert first.status_code == 201 and again.status_code == 201
            assert first.json()["sandboxID"] == again.json()["sandboxID"]
            other = api.post("/v2/sandboxes", json={"templateID": "base"}, headers=headers)
            _assert_error(other, 409)
            _assert_error(api.post("/v2/sandboxes", json={"templateID": "base"}, headers={"Idempotency-Key": "bad key!"}), 400)
        finally:
            api.delete(f"/sandboxes/{first.json()['sandboxID']}")
