"""Every non-2xx answer is E2B-shaped JSON: ``{"code": int, "message": str}``.

The SDK's generated client calls ``Error.from_dict`` on error bodies and
crashes on anything else, so no handler may ever emit HTML or plain text.
"""

from __future__ import annotations

import functools
import re
import uuid

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path

from sandlot.api.prime import errors as prime_errors
from sandlot.api.prime.errors import route_path
from sandlot.orchestrator import errors as domain
from sandlot.orchestrator.volume_files import PathNotFound
from sandlot.orchestrator.volumes import VolumeNotFound, VolumeTokenInvalid
from sandlot.quotas import NO_RETRY, QuotaExceeded
from sandlot.runtime import disk
from sandlot.runtime.checkpoint import CriuUnavailable

log = structlog.get_logger("sandlot.api")


class APIError(Exception):
    """Raise from a handler to answer with ``status`` and an E2B error body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


E2B_STATUS: dict[type[Exception], int] = {
    domain.SandboxNotFound: 404,
    VolumeNotFound: 404,
    PathNotFound: 404,
    VolumeTokenInvalid: 401,
    domain.GuestUnresponsiveAtPause: 409,
    domain.Conflict: 409,
    domain.GuestUnhealthy: 503,   # the SDK's ServiceBusyException: retry once the guest answers
    domain.NoNodeAvailable: 503,   # the only node is drained: no placement (running sandboxes unaffected)
    domain.InvalidRequest: 400,
    QuotaExceeded: 429,
    domain.InsufficientStorage: 507,
    domain.OperationFailed: 500,
    domain.SandboxError: 500,
}
"""The orchestrator's domain errors as E2B statuses: the one place they meet HTTP."""

PRIME_STATUS: dict[type[Exception], int] = {**E2B_STATUS, domain.InvalidRequest: 422}
"""The same for the Prime façade: Prime's FastAPI answers invalid input with 422."""


def status_of(exc: Exception, table: dict[type[Exception], int] = E2B_STATUS) -> int:
    """The status of a domain error (its most specific class in ``table``)."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return 500


def domain_message(exc: Exception) -> str:
    return exc.message if isinstance(exc, (domain.SandboxError, QuotaExceeded)) else str(exc)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def not_found_sandbox(sandbox_id: str) -> APIError:
    return APIError(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{location}: {err.get('msg')}" if location else str(err.get("msg")))
    return "Invalid request: " + "; ".join(parts)


def _respond(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """E2B's shape, or Prime's under ``/api/v1`` (one shape per API, whoever raised)."""
    if prime_errors.applies(request):
        return prime_errors.response(status, message, headers)
    return error_response(status, message, headers)


@functools.lru_cache(maxsize=512)
def _route_pattern(path: str) -> tuple[re.Pattern[str], int]:
    """The path's regex and its specificity: how many literal characters it has."""
    return compile_path(path)[0], len(re.sub(r"\{[^}]*\}", "", path))


def _candidates(request: Request) -> list[tuple[int, set[str]]]:
    """(specificity, methods) of every route whose path matches this request's."""
    found = []
    for route in iter_route_contexts(request.app.router.routes):
        if route.methods and route.path:
            pattern, specificity = _route_pattern(route.path)
            if pattern.match(route_path(request)):
                found.append((specificity, set(route.methods)))
    return found


def _allowed_methods(request: Request) -> str:
    """The methods of the most specific routes at this path (Starlette's 405 names one route's only)."""
    found = _candidates(request)
    top = max((specificity for specificity, _ in found), default=0)
    return ", ".join(sorted(set().union(*(methods for specificity, methods in found if specificity == top))))


def most_specific_route(request: Request) -> None:
    """App-wide dependency: a path that a more specific route serves belongs to that route.

    Without it ``PATCH /templates/x/builds/y`` reached the catch-all ``PATCH /templates/{id:path}``
    and answered 400 "Field required" for template "x/builds/y"; now it is a 405 with ``Allow``."""
    found = _candidates(request)
    top = max((specificity for specificity, _ in found), default=0)
    if not any(specificity == top and request.method in methods for specificity, methods in found):
        raise StarletteHTTPException(405)


def _criu_unavailable(exc: BaseException) -> str | None:
    """The CRIU problem behind an error, however the layers in between wrapped it."""
    seen = exc
    for _ in range(8):
        if isinstance(seen, CriuUnavailable):
            return str(seen)
        if seen.__cause__ is None:
            return None
        seen = seen.__cause__
    return None


def _criu_response(request: Request, exc: Exception) -> JSONResponse | None:
    """503 for a failure whose cause is missing CRIU, whichever layer wrapped it."""
    criu = _criu_unavailable(exc)
    if criu is None:
        return None
    return _respond(request, 503, "Unavailable on this server: memory pause/resume, snapshots and "
                                  f"fork need CRIU, which is missing or broken ({criu})")


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _criu_response(request, exc) or _respond(request, exc.status, exc.message, exc.headers)

    @app.exception_handler(domain.SandboxError)
    @app.exception_handler(QuotaExceeded)
    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        criu = _criu_response(request, exc)
        if criu is not None:
            return criu
        prime = prime_errors.applies(request)
        status = status_of(exc, PRIME_STATUS if prime else E2B_STATUS)
        # a 429 is a quota (sandlot/quotas.py), not a rate: the SDK must not retry it for seconds
        headers = NO_RETRY if status == 429 and not prime else None
        error_code = getattr(exc, "error_code", None)
        if error_code is not None and not prime:   # E2B's machine-readable reason: the SDK picks its exception by it
            return JSONResponse({"code": status, "message": domain_message(exc), "error_code": error_code},
                                status_code=status)
        return _respond(request, status, domain_message(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if prime_errors.applies(request):   # Prime's FastAPI: 422 with the field errors
            return prime_errors.response(422, prime_errors.field_errors(exc.errors()))
        return error_response(400, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 404 and message == "Not Found" and not prime_errors.applies(request):
            message = "Not found"
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return _respond(request, exc.status_code, message, headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if disk.out_of_space(exc):   # the database or a file the server writes: not a bug, a full disk
            log.warning("request failed: the server's disk is full", path=request.url.path, error=str(exc)[:300])
            return _respond(request, 507, "Insufficient storage: the server's disk is full; "
                                          "retry once the operator has freed space")
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error", request_id=request_id, path=request.url.path, method=request.method)
        return _respond(request, 500, f"Internal server error (request id {request_id})")
