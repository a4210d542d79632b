"""The API contract, case by case: wrong methods, one error shape per API, strict date-times,
and an OpenAPI that documents what is served (the full sweep is test_schema_conformance.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.server import Server


@pytest.fixture(scope="module")
def api(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def schema(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _e2b_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == status and isinstance(body["message"], str), body
    return body["message"]


def _prime_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail"}, body
    return body["detail"]


def test_wrong_method_is_405_with_every_allowed_method(api: httpx.Client) -> None:
    response = api.put("/sandboxes")
    _e2b_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}   # two routes share the path

    response = api.get("/sandboxes/some-id/timeout")
    _e2b_error(response, 405)
    assert response.headers["allow"] == "POST"

    response = api.put("/api/v1/sandbox")
    _prime_error(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"DELETE", "GET", "POST"}


def test_a_wrong_method_never_reaches_validation(api: httpx.Client) -> None:
    """The legitimate method still validates its body (400), the wrong one is a 405."""
    assert "templateID" in _e2b_error(api.post("/sandboxes", json={}), 400)
    _e2b_error(api.patch("/sandboxes", json={}), 405)
    # a catch-all (PATCH /templates/{id:path}) does not swallow a more specific route's path:
    # this used to be 400 "Field required" for a template called "x/builds/y"
    for path, allow in (("/templates/x/builds/y", "POST"), ("/templates/x/tags", "GET"),
                        ("/templates/aliases/a", "GET")):
        response = api.patch(path)
        _e2b_error(response, 405)
        assert response.headers["allow"] == allow, path
    assert api.patch("/templates/nosuchtemplate", json={"public": True}).status_code == 404   # the real PATCH
    assert api.get("/sandboxes/metrics", params={"sandbox_ids": "x"}).status_code == 200
    _e2b_error(api.delete("/sandboxes/metrics"), 405)     # not "kill the sandbox called metrics"


def test_prime_errors_are_prime_shaped_whoever_raises_them(server: Server, api: httpx.Client) -> None:
    anonymous = httpx.get(f"{server.url}/api/v1/sandbox")                        # auth dependency
    assert isinstance(_prime_error(anonymous, 401), str)
    assert "not found" in _prime_error(api.get("/api/v1/sandbox/nosuchbox"), 404)  # the façade
    assert _prime_error(api.get("/api/v1/no-such-route"), 404) == "Not Found"      # the router
    detail = _prime_error(api.get("/api/v1/sandbox", params={"page": 0}), 422)     # query validation
    assert detail[0]["loc"] == ["query", "page"] and detail[0]["msg"] and detail[0]["type"]
    detail = _prime_error(api.post("/api/v1/sandbox", json={}), 422)              # body validation
    assert ["name"] in [d["loc"] for d in detail]
    # and the E2B API keeps its own shape for the same situations
    _e2b_error(httpx.get(f"{server.url}/v2/sandboxes"), 401)
    _e2b_error(api.get("/sandboxes/nosuchbox"), 404)
    assert "limit" in _e2b_error(api.get("/v2/sandboxes", params={"limit": 0}), 400)


def test_date_time_query_is_rfc3339(api: httpx.Client) -> None:
    for bad in ("0.5", "1700000000", "2025-01-31", "2025-01-31T12:00:00", "yesterday"):
        assert "startedAfter" in _e2b_error(api.get("/v2/sandboxes", params={"startedAfter": bad}), 400), bad
    for good in ("2025-01-31T12:00:00Z", "2025-01-31T12:00:00.5+02:00"):
        response = api.get("/v2/sandboxes", params={"startedAfter": good})
        assert response.status_code == 200 and isinstance(response.json(), list), response.text


def test_openapi_documents_served_errors(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert set(components["Error"]["required"]) == {"code", "message"}
    assert components["PrimeError"]["required"] == ["detail"]
    assert "HTTPValidationError" not in components
    for path, operations in schema["paths"].items():
        prime = path.startswith("/api/v1")
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "500" in responses, where
            if not prime:
                assert "422" not in responses, where      # E2B's validation errors are 400s
            elif _has_input(operation):
                assert "422" in responses, where          # Prime's are FastAPI's 422s
            for status, response in responses.items():
                if int(status) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/PrimeError" if prime else "/Error"), where
    assert {"400", "401", "404", "409", "429"} <= set(schema["paths"]["/sandboxes"]["post"]["responses"])
    assert {"401", "404"} <= set(schema["paths"]["/sandboxes/{sandbox_id}"]["get"]["responses"])
    assert {"404", "409", "503", "507"} <= set(schema["paths"]["/sandboxes/{sandbox_id}/pause"]["post"]["responses"])
    assert "400" not in schema["paths"]["/sandboxes/{sandbox_id}"]["get"]["responses"]   # nothing to reject there
    assert {"401", "404", "422", "429"} <= set(schema["paths"]["/api/v1/sandbox"]["post"]["responses"])


def test_openapi_carries_the_enforced_limits(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert components["NewSandbox"]["properties"]["templateID"]["maxLength"] == 255
    create = components["CreateBody"]["properties"]          # Prime's body, parsed by hand, documented all the same
    assert create["name"]["maxLength"] == 100
    assert create["timeout_minutes"]["maximum"] == 1440
    assert components["BatchStatusBody"]["properties"]["sandbox_ids"]["maxItems"] == 100
    listing = {p["name"]: p["schema"] for p in schema["paths"]["/v2/sandboxes"]["get"]["parameters"]}
    assert listing["limit"]["maximum"] == 100
    started_after = next(s for s in listing["startedAfter"]["anyOf"] if s.get("type") == "string")
    assert started_after["format"] == "date-time"


def _has_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("requestBody") or any(p["in"] != "path" for p in operation.get("parameters", [])))
