"""The contract pieces that need no server: strict date-times, 405s and the completed schema."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from sandlot.api import builds, errors, observability, openapi, sandboxes, snapshots, templates
from sandlot.api.prime import errors as prime_errors
from sandlot.api.prime import images as prime_images
from sandlot.api.prime import sandboxes as prime_sandboxes

DATE_TIME = TypeAdapter(openapi.DateTime)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    """The real routers in the real order, without services: enough for routing and the schema."""
    api = FastAPI(dependencies=[Depends(errors.most_specific_route)])
    errors.install(api)
    prime_errors.install(api)
    openapi.install(api)
    for module in (observability, builds, templates, snapshots, sandboxes, prime_sandboxes, prime_images):
        api.include_router(module.router)
    return api


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2025-01-31", "2025-01-31T12:00:00", "2025-13-01T00:00:00Z", ""])
def test_date_time_refuses_what_is_not_rfc3339(value: str) -> None:
    with pytest.raises(ValidationError):
        DATE_TIME.validate_python(value)


def test_date_time_takes_rfc3339_and_answers_utc() -> None:
    assert DATE_TIME.validate_python("2025-01-31T14:00:00+02:00") == datetime(2025, 1, 31, 12, tzinfo=timezone.utc)
    assert DATE_TIME.validate_python("2025-01-31t12:00:00.25z").microsecond == 250_000


@pytest.mark.parametrize(("method", "path", "allow", "shape"), [
    ("PUT", "/sandboxes", "GET, POST", "code"),
    ("PATCH", "/templates/x/builds/y", "POST", "code"),       # not the PATCH /templates/{id:path} catch-all
    ("GET", "/templates/x/builds/y", "POST", "code"),
    ("PATCH", "/templates/x/tags", "GET", "code"),
    ("DELETE", "/sandboxes/metrics", "GET", "code"),          # not "kill the sandbox called metrics"
    ("PUT", "/api/v1/sandbox", "DELETE, GET, POST", "detail"),
    ("DELETE", "/api/v1/sandbox/status:batchGet", "POST", "detail"),
])
def test_wrong_method_is_405_before_auth_and_body(app: FastAPI, method: str, path: str, allow: str, shape: str) -> None:
    response = TestClient(app).request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert shape in response.json()


@pytest.mark.parametrize("path", ["/api/v1/sandbox/%0D", "/sandboxes/%09", "/templates/%0A"])
def test_control_characters_in_a_path_segment_are_still_that_route(app: FastAPI, path: str) -> None:
    """Found by schemathesis: the 405 check read a path with its control characters dropped."""
    response = TestClient(app).delete(path)
    assert response.status_code == 401, response.text    # reached the route: its API-key check answers


def test_schema_is_completed_once_and_consistently(app: FastAPI) -> None:
    schema = app.openapi()
    assert app.openapi() is schema
    kill = schema["paths"]["/sandboxes/{sandbox_id}"]["delete"]["responses"]
    assert set(kill) == {"204", "401", "404", "500"}   # a path segment cannot fail validation: no 400
    listing = schema["paths"]["/v2/sandboxes"]["get"]["responses"]
    assert set(listing) == {"200", "400", "401", "500"}
    assert listing["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    prime_list = schema["paths"]["/api/v1/sandbox"]["get"]["responses"]
    assert prime_list["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PrimeError"}
    upload = schema["paths"]["/templates/{template_id}/files/{files_hash}/upload"]["put"]["responses"]
    assert "401" not in upload and "security" not in schema["paths"]["/templates/{template_id}/files/{files_hash}/upload"]["put"]
    assert schema["paths"]["/sandboxes/{sandbox_id}"]["get"]["security"] == [{"ApiKeyAuth": []}, {"BearerAuth": []}]
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "X-API-Key"
    assert "/templates/{snapshot_id}" not in schema["paths"]   # the duplicate route is served by /templates/{id}
