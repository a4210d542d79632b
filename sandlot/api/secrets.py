"""E2B's ``/secrets``: per-team secrets whose values are write-only.

Values come in through ``POST`` bodies as :class:`pydantic.SecretStr` (its ``repr`` is masked,
so no traceback or validation message can carry one), go straight to the store's sealing,
and no response, log line or error message contains them: every answer is built by
:func:`_secret_json` from the row's metadata fields. ``Cache-Control: no-store`` on all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError
from sandlot.store import secrets as secret_store
from sandlot.store.models import TeamSecret

router = APIRouter()

NO_STORE = {"Cache-Control": "no-store"}
Metadata = Annotated[dict[Annotated[str, Field(max_length=1024)], Annotated[str, Field(max_length=4096)]],
                     Field(max_length=64)]
"""Loose bounds for parsing; the store checks E2B's exact ones (32 entries, 128/1024/8192 bytes)."""


class NewSecret(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=1024)
    value: SecretStr = Field(max_length=512 * 1024)
    metadata: Metadata | None = None


class SecretUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    value: SecretStr = Field(max_length=512 * 1024)
    metadata: Metadata | None = None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _secret_json(row: TeamSecret) -> dict[str, Any]:
    return {"secretID": row.id, "name": row.name, "currentVersion": row.current_version,
            "metadata": dict(row.metadata_ or {}), "createdAt": _iso(row.created_at), "updatedAt": _iso(row.updated_at)}


def _not_found(ref: str) -> APIError:
    return APIError(404, f"Secret '{ref[:200]}' not found")


@router.get("/secrets", responses=openapi.errors(400))
async def list_secrets(request: Request, team_id: TeamId, limit: Annotated[int, Query(ge=1, le=100)] = 100,
                       next_token: Annotated[str | None, Query(alias="nextToken", max_length=64)] = None) -> JSONResponse:
    with request.app.state.services.db.session() as session:
        try:
            rows, cursor = secret_store.page(session, team_id, limit, next_token)
        except secret_store.InvalidSecret as exc:
            raise APIError(400, str(exc)) from None
        body = [_secret_json(r) for r in rows]
    headers = dict(NO_STORE)
    if cursor:
        headers["X-Next-Token"] = cursor
    return JSONResponse(body, headers=headers)


@router.post("/secrets", status_code=201, responses=openapi.errors(400, 409))
async def create_secret(body: NewSecret, request: Request, team_id: TeamId) -> JSONResponse:
    with request.app.state.services.db.session() as session, session.begin():
        try:
            row = secret_store.create(session, team_id, body.name, body.value.get_secret_value(), body.metadata)
        except secret_store.InvalidSecret as exc:
            raise APIError(400, str(exc)) from None
        except secret_store.SecretConflict as exc:
            raise APIError(409, str(exc)) from None
        data = _secret_json(row)
    return JSONResponse(data, status_code=201, headers=NO_STORE)


@router.get("/secrets/{secret_id}", responses=openapi.errors(404))
async def get_secret(secret_id: str, request: Request, team_id: TeamId) -> JSONResponse:
    with request.app.state.services.db.session() as session:
        row = secret_store.find(session, team_id, secret_id)
        if row is None:
            raise _not_found(secret_id)
        return JSONResponse(_secret_json(row), headers=NO_STORE)


@router.post("/secrets/{secret_id}", responses=openapi.errors(400, 404))
async def update_secret(secret_id: str, body: SecretUpdate, request: Request, team_id: TeamId) -> JSONResponse:
    with request.app.state.services.db.session() as session, session.begin():
        row = secret_store.find(session, team_id, secret_id)
        if row is None:
            raise _not_found(secret_id)
        try:
            secret_store.update(session, row, body.value.get_secret_value(), body.metadata)
        except secret_store.InvalidSecret as exc:
            raise APIError(400, str(exc)) from None
        data = _secret_json(row)
    return JSONResponse(data, headers=NO_STORE)


@router.delete("/secrets/{secret_id}", status_code=204, responses=openapi.errors(404))
async def delete_secret(secret_id: str, request: Request, team_id: TeamId) -> Response:
    with request.app.state.services.db.session() as session, session.begin():
        row = secret_store.find(session, team_id, secret_id)
        if row is None:
            raise _not_found(secret_id)
        secret_store.delete(session, row)
    return Response(status_code=204, headers=NO_STORE)
