"""E2B's team routes: ``/teams``, team metrics, ``/api-keys`` and ``/access-tokens``.

Sandlot has no users: a caller is a team, named by an API key (``X-API-Key`` or ``Bearer
e2b_…``) or an access token (``Bearer sk_e2b_…``, what ``e2b auth login`` holds). E2B takes a
dashboard login (JWT) for keys and tokens; here the team's own key or token does, and a
caller only ever sees and changes its own team's keys, tokens and metrics.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from sandlot.api import openapi
from sandlot.api.errors import APIError
from sandlot.logging_setup import bind_request
from sandlot.store import keys
from sandlot.store import team_metrics
from sandlot.store.models import AccessToken, ApiKey, Team

router = APIRouter()


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _resolve(request: Request, *, keys_allowed: bool) -> str:
    """The caller's team id; 401 for a missing or unknown credential."""
    api_key = request.headers.get("x-api-key", "").strip() or None
    bearer = _bearer(request)
    db = request.app.state.services.db
    with db.session() as session, session.begin():
        if bearer and bearer.startswith(keys.ACCESS_TOKEN_PREFIX):
            team_id = keys.team_for_access_token(session, bearer)
        elif not keys_allowed:
            raise APIError(401, "This route takes an access token (Authorization: Bearer sk_e2b_...); "
                                "make one with POST /access-tokens or `e2b auth login`")
        elif api_key or bearer:
            team_id = keys.team_for_key(session, api_key or bearer or "")
        else:
            raise APIError(401, "Missing API key: send it in the X-API-Key header")
    if team_id is None:
        raise APIError(401, "Invalid API key or access token")
    wanted = request.headers.get("x-team-id")
    if wanted is not None and wanted != team_id:
        raise APIError(403, "The credential does not belong to the team in X-Team-ID")
    bind_request(team_id=team_id)   # the request's later log lines name the team
    return team_id


def caller_team(request: Request) -> str:
    """Dependency: the team behind an API key or an access token."""
    return _resolve(request, keys_allowed=True)


def token_team(request: Request) -> str:
    """Dependency: the team behind an access token (E2B's ``GET /teams`` takes no API key)."""
    return _resolve(request, keys_allowed=False)


CallerTeam = Annotated[str, Depends(caller_team)]
TokenTeam = Annotated[str, Depends(token_team)]


ROW_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
"""Key and token ids are UUIDs: anything else is a 404 without a query (a NUL would be a
PostgreSQL error)."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


# --- teams -----------------------------------------------------------------------------------


@router.get("/teams", responses=openapi.errors(401, 403))
async def list_teams(request: Request, team_id: TokenTeam) -> list[dict[str, Any]]:
    """The caller's team, with a new API key: E2B mints one per call, for ``e2b auth login``
    and ``e2b auth configure`` to save (the only time a key's value is ever shown)."""
    with request.app.state.services.db.session() as session, session.begin():
        team = session.get(Team, team_id)
        if team is None:
            raise APIError(401, "Invalid access token")
        _, api_key = keys.add_key(session, team, "CLI login")
        return [{"teamID": team.id, "name": team.name, "apiKey": api_key, "isDefault": True}]


def _range(team_id: str, wanted: str, start: int | None, end: int | None) -> tuple[datetime, datetime]:
    if wanted != team_id:
        raise APIError(403, f"You are not allowed to access team '{wanted[:100]}'")
    now = datetime.now(timezone.utc)
    until = datetime.fromtimestamp(end, timezone.utc) if end is not None else now
    since = datetime.fromtimestamp(start, timezone.utc) if start is not None else until - timedelta(days=7)
    if since > until:
        raise APIError(400, "start must not be after end")
    if until - since > team_metrics.MAX_RANGE:
        raise APIError(400, f"start and end may be at most {team_metrics.MAX_RANGE.days} days apart")
    return since, until


UnixTime = Annotated[int | None, Query(ge=0, le=2**33)]


@router.get("/teams/{wanted}/metrics", responses=openapi.errors(401, 403))
async def team_metrics_series(wanted: str, request: Request, team_id: CallerTeam,
                              start: UnixTime = None, end: UnixTime = None) -> list[dict[str, Any]]:
    """Concurrent sandboxes and start rate (per second) at each step of ``[start, end]``."""
    since, until = _range(team_id, wanted, start, end)
    with request.app.state.services.db.session() as session, session.begin():
        team_metrics.prune(session)   # runs older than any range one can ask for
        return [p.to_json() for p in team_metrics.series(session, team_id, since, until)]


@router.get("/teams/{wanted}/metrics/max", responses=openapi.errors(401, 403))
async def team_metrics_max(wanted: str, request: Request, team_id: CallerTeam,
                           metric: Literal["concurrent_sandboxes", "sandbox_start_rate"],
                           start: UnixTime = None, end: UnixTime = None) -> dict[str, Any]:
    """The highest value of one metric in the range and when it was first reached."""
    since, until = _range(team_id, wanted, start, end)
    with request.app.state.services.db.session() as session:
        points = team_metrics.series(session, team_id, since, until)
    best_at, best = until, 0.0
    for point in points:
        value = point.concurrent if metric == "concurrent_sandboxes" else point.start_rate
        if value > best:
            best_at, best = point.at, value
    return {"timestamp": _iso(best_at), "timestampUnix": int(best_at.timestamp()), "value": best}


# --- API keys --------------------------------------------------------------------------------


class NewName(BaseModel):
    name: str = Field(min_length=1, max_length=255)


def _key_json(row: ApiKey) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "mask": keys.key_mask(row), "createdAt": _iso(row.created_at),
            "createdBy": None, "lastUsed": _iso(row.last_used_at)}


@router.get("/api-keys", responses=openapi.errors(401, 403))
async def list_api_keys(request: Request, team_id: CallerTeam) -> list[dict[str, Any]]:
    """The team's keys, masked (only a hash of each is stored: the full key cannot be shown)."""
    with request.app.state.services.db.session() as session:
        return [_key_json(row) for row in keys.team_keys(session, team_id)]


@router.post("/api-keys", status_code=201, responses=openapi.errors(401, 403))
async def create_api_key(body: NewName, request: Request, team_id: CallerTeam) -> dict[str, Any]:
    with request.app.state.services.db.session() as session, session.begin():
        team = session.get(Team, team_id)
        assert team is not None
        row, key = keys.add_key(session, team, body.name)
        return {**_key_json(row), "key": key}


@router.patch("/api-keys/{key_id}", status_code=202, response_class=Response, responses=openapi.errors(401, 403, 404))
async def rename_api_key(key_id: str, body: NewName, request: Request, team_id: CallerTeam) -> Response:
    """202 without a body, as E2B's server answers (its spec says 200)."""
    with request.app.state.services.db.session() as session, session.begin():
        row = keys.team_key(session, team_id, key_id) if ROW_ID.match(key_id) else None
        if row is None:
            raise APIError(404, "id not found")
        row.name = body.name
    return Response(status_code=202)


@router.delete("/api-keys/{key_id}", status_code=204, responses=openapi.errors(401, 403, 404))
async def delete_api_key(key_id: str, request: Request, team_id: CallerTeam) -> Response:
    with request.app.state.services.db.session() as session, session.begin():
        row = keys.team_key(session, team_id, key_id) if ROW_ID.match(key_id) else None
        if row is None:
            raise APIError(404, "id not found")
        session.delete(row)
    return Response(status_code=204)


# --- access tokens ---------------------------------------------------------------------------


def _token_json(row: AccessToken, token: str) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "token": token, "mask": keys.token_mask(row),
            "createdAt": _iso(row.created_at)}


@router.post("/access-tokens", status_code=201, responses=openapi.errors(401, 403))
async def create_access_token(body: NewName, request: Request, team_id: CallerTeam) -> dict[str, Any]:
    """The token is shown once; only its hash is kept."""
    with request.app.state.services.db.session() as session, session.begin():
        row, token, _ = keys.add_access_token(session, team_id, body.name)
        return _token_json(row, token)


@router.delete("/access-tokens/{token_id}", status_code=204, responses=openapi.errors(401, 403, 404))
async def delete_access_token(token_id: str, request: Request, team_id: CallerTeam) -> Response:
    with request.app.state.services.db.session() as session, session.begin():
        if not ROW_ID.match(token_id) or not keys.delete_access_token(session, team_id, token_id):
            raise APIError(404, "id not found")
    return Response(status_code=204)
