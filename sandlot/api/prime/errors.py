"""Prime-shaped errors: FastAPI's ``{"detail": ...}``, which the Prime SDK prints after ``HTTP <status>:``.

Every error under ``/api/v1`` has this shape — also the ones raised outside the façade
(a missing API key, an unknown path, a wrong method, a bad query parameter): the shared
handlers in ``sandlot/api/errors.py`` ask ``applies`` and answer with ``response``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

M = TypeVar("M", bound=BaseModel)

PREFIX = "/api/v1"


def route_path(request: Request) -> str:
    """The path the router matched, as Starlette sees it: ``request.url.path`` goes through
    ``urlsplit``, which drops control characters (``/sandbox/%0D`` would read as ``/sandbox/``)."""
    path: str = request.scope["path"]
    root = request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


def applies(request: Request) -> bool:
    """Whether ``request`` is a Prime API call (its errors answer in Prime's shape)."""
    path = route_path(request)
    return path == PREFIX or path.startswith(PREFIX + "/")


def response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` list, without pydantic's URLs and input echoes."""
    return [{"loc": [p if isinstance(p, int) else str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in errors]


class PrimeError(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers


def install(app: FastAPI) -> None:
    @app.exception_handler(PrimeError)
    async def _prime_error(_request: Request, exc: PrimeError) -> JSONResponse:
        return response(exc.status, exc.detail, exc.headers)


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate a JSON body like FastAPI would, but answer 422 in Prime's shape."""
    try:
        raw = await request.json() if await request.body() else {}
    except ValueError as exc:
        raise PrimeError(422, f"Request body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise PrimeError(422, field_errors(exc.errors(include_url=False))) from exc


def not_found(what: str, ident: str) -> PrimeError:
    return PrimeError(404, f"{what} {ident} not found")
