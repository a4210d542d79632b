"""Prime-shaped errors: FastAPI's ``{"detail": ...}``, which the Prime SDK prints after ``HTTP <status>:``."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

M = TypeVar("M", bound=BaseModel)


class PrimeError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def install(app: FastAPI) -> None:
    @app.exception_handler(PrimeError)
    async def _prime_error(_request: Request, exc: PrimeError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate a JSON body like FastAPI would, but answer 422 in Prime's shape."""
    try:
        raw = await request.json() if await request.body() else {}
    except ValueError as exc:
        raise PrimeError(422, f"Request body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise PrimeError(
            422, [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)]
        ) from exc


def not_found(what: str, ident: str) -> PrimeError:
    return PrimeError(404, f"{what} {ident} not found")
