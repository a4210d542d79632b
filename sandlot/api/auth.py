"""API-key authentication: ``X-API-Key`` or ``Authorization: Bearer``; the key selects the team."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sandlot.api.errors import APIError
from sandlot.logging_setup import bind_request
from sandlot.store import keys


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def require_team(request: Request) -> str:
    """Dependency: the team id behind the request's API key, else 401."""
    key = _presented_key(request)
    if key is None:
        raise APIError(401, "Missing API key: send it in the X-API-Key header")
    db = request.app.state.services.db
    with db.session() as session, session.begin():
        team_id = keys.team_for_key(session, key)
    if team_id is None:
        raise APIError(401, "Invalid API key")
    bind_request(team_id=team_id)   # the request's later log lines name the team
    return team_id


TeamId = Annotated[str, Depends(require_team)]
