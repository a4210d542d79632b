"""The served OpenAPI says what the server really does: its error statuses and their bodies.

Routes declare the statuses only they can answer (``responses=errors(404, 409)``);
``install`` adds the ones every route shares — 400 where there is input to reject,
401 where an API key is needed, 500 everywhere — and drops FastAPI's 422, which the
E2B routes never send (validation is a 400 there). Prime's ``/api/v1`` routes answer
in Prime's own shape, ``{"detail": …}``, validation included (422, like Prime's FastAPI).
Schemathesis checks all of it against a real server (``tests/e2e/test_schema_conformance.py``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import AfterValidator, BaseModel, BeforeValidator

from sandlot.api.auth import require_team

PRIME_PREFIX = "/api/v1"

_REF = "#/components/schemas/"
_WHY = {
    400: "Invalid request (the message says which field and why)",
    401: "Missing or invalid API key",
    403: "Forbidden (e.g. an invalid or expired upload token)",
    404: "Not found, or not this team's",
    409: "Conflicts with the current state",
    410: "Gone: the sandbox has ended",
    413: "Payload too large",
    422: "Invalid request (Prime's FastAPI shape: detail lists the field errors)",
    429: "A per-team quota is reached (not a rate limit: retrying soon does not help)",
    500: "Internal server error (the message carries a request id for the server log)",
    501: "Not implemented by this server",
    502: "The sandbox's agent did not answer",
    503: "Unavailable here: the server is starting, or this host cannot offer the feature (GET /health says why)",
    507: "Not enough disk space on the server",
}


_BODIES: list[type[BaseModel]] = []
SECURITY_SCHEMES = {   # sandlot/api/auth.py: either header carries the team's API key
    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
}


class Error(BaseModel):
    """E2B's error body (the SDK's generated client parses exactly this)."""

    code: int
    message: str


class PrimeFieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class PrimeError(BaseModel):
    """Prime's error body: a message, or FastAPI's list of field errors on a 422."""

    detail: str | list[PrimeFieldError]


def _response(schema: str, status: int) -> dict[str, Any]:
    return {"description": _WHY.get(status, "Error"), "content": {"application/json": {"schema": {"$ref": _REF + schema}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an E2B route: the statuses it answers beyond the shared 400/401/500."""
    return {status: _response("Error", status) for status in statuses}


def prime_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a Prime ``/api/v1`` route, in Prime's ``{"detail": …}`` shape."""
    return {status: _response("PrimeError", status) for status in statuses}


CONNECT = {
    201: {"description": "A paused sandbox was resumed (200: it was running)",
          "content": {"application/json": {"schema": {"type": "object"}}}},
    **errors(404, 409, 429, 503, 507),
}
"""``POST /sandboxes/{id}/connect``: E2B's two success statuses."""


def body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra=`` documenting a JSON body a route parses itself (the Prime routes
    validate by hand to answer in Prime's shape), limits included."""
    _BODIES.append(model)
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": _REF + model.__name__}}}}}


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339_only(value: object) -> object:
    # pydantic would take 0.5 as a Unix time: the documented format is an RFC 3339 date-time
    if isinstance(value, str) and _RFC3339.fullmatch(value.strip()):
        return value.strip()
    if isinstance(value, datetime):
        return value
    raise ValueError("expected an RFC 3339 date-time with an offset, such as 2025-01-31T12:00:00Z")


DateTime = Annotated[datetime, BeforeValidator(_rfc3339_only), AfterValidator(lambda v: v.astimezone(timezone.utc))]
"""A ``format: date-time`` query parameter that means it: RFC 3339 with an offset, in UTC."""


def _needs_key(route: APIRoute) -> bool:
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is require_team:
            return True
        stack.extend(dependant.dependencies)
    return False


def _has_input(operation: dict[str, Any]) -> bool:
    """Whether a request can fail validation (a path segment is any string: never)."""
    return bool(operation.get("requestBody") or any(p.get("in") != "path" for p in operation.get("parameters", [])))


def _complete(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [Error, PrimeError, *_BODIES]
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not context.include_in_schema or not context.path_format:
            continue
        prime = context.path_format.startswith(PRIME_PREFIX)
        shape = "PrimeError" if prime else "Error"
        for method in context.methods or ():
            operation = schema["paths"].get(context.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            shared = [500]
            if _needs_key(route):
                shared.append(401)
                operation["security"] = [{"ApiKeyAuth": []}, {"BearerAuth": []}]
            if _has_input(operation):
                shared.append(422 if prime else 400)
            for status in shared:
                responses.setdefault(str(status), _response(shape, status))
    for model in models:
        generated = model.model_json_schema(ref_template=_REF + "{model}")
        for name, definition in {**generated.pop("$defs", {}), model.__name__: generated}.items():
            if components.setdefault(name, definition) != definition:
                raise RuntimeError(f"two request models are both called {name} in the OpenAPI schema")
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Serve the completed schema at ``/openapi.json`` (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(app, generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
