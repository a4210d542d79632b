"""Pause/resume, snapshot and fork routes (E2B ``/sandboxes/{id}/pause|resume|snapshots|fork``,
``/snapshots``, ``DELETE /templates/{snapshotID}``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError, domain_message, status_of
from sandlot.api.sandboxes import checked_timeout, manager, sandbox_json, short_id
from sandlot.orchestrator.errors import SandboxError
from sandlot.orchestrator.snapshots import MAX_FORKS
from sandlot.quotas import QuotaExceeded, reserve_snapshot
from sandlot.store import snapshots as snapshot_store
from sandlot.store.models import Snapshot

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class PauseBody(_Body):
    memory: StrictBool | None = None
    # refuse (503, the sandbox keeps running) rather than snapshot a guest agent that does not answer
    require_healthy_guest: StrictBool | None = Field(None, alias="requireHealthyGuest")


class ResumeBody(_Body):
    timeout: int | None = None
    auto_pause: StrictBool | None = Field(None, alias="autoPause")
    memory: StrictBool | None = None


class SnapshotBody(_Body):
    name: str | None = Field(None, max_length=255)
    memory: StrictBool | None = None


class ForkBody(_Body):
    timeout: int | None = None
    count: int | None = None


def _snapshot_json(snap: Snapshot) -> dict[str, Any]:
    return {"snapshotID": snap.id, "names": [snap.name] if snap.name else []}


@router.post("/sandboxes/{sandbox_id}/pause", status_code=204, responses=openapi.errors(404, 409, 503, 507))
async def pause(sandbox_id: str, request: Request, team_id: TeamId, body: PauseBody | None = None) -> Response:
    await manager(request).pause(team_id, short_id(sandbox_id), body.memory if body else None,
                                 strict=bool(body and body.require_healthy_guest))
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/resume", status_code=201, responses=openapi.errors(404, 409, 429, 503, 507))
async def resume(sandbox_id: str, request: Request, response: Response, team_id: TeamId,
                 body: ResumeBody | None = None) -> dict[str, Any]:
    timeout = checked_timeout(request, body.timeout if body else None)
    memory = body is None or body.memory is not False
    row, resumed = await manager(request).resume(team_id, short_id(sandbox_id), timeout, memory=memory)
    if not resumed:
        raise APIError(409, f"Sandbox \"{sandbox_id}\" is already running")
    return sandbox_json(row, request.app.state.services.settings.domain)


@router.post("/sandboxes/{sandbox_id}/snapshots", status_code=201, responses=openapi.errors(404, 409, 429, 503, 507))
async def create_snapshot(sandbox_id: str, request: Request, team_id: TeamId,
                          body: SnapshotBody | None = None) -> dict[str, Any]:
    name = body.name if body else None
    memory = True if body is None or body.memory is None else body.memory
    services = request.app.state.services
    with services.db.session() as session, session.begin():  # early 429, before the dump (re-checked at insert)
        if not (name and snapshot_store.resolve(session, team_id, name)):   # re-using a name adds no snapshot
            reserve_snapshot(session, services.settings, team_id)
    snap = await manager(request).snapshot(team_id, short_id(sandbox_id), name, memory)
    return _snapshot_json(snap)


@router.get("/snapshots")
async def list_snapshots(
    request: Request,
    response: Response,
    team_id: TeamId,
    sandbox_id: str | None = Query(None, alias="sandboxID"),
    name: str | None = None,
    limit: int = Query(100, ge=1, le=100),
    next_token: str | None = Query(None, alias="nextToken"),
) -> list[dict[str, Any]]:
    with request.app.state.services.db.session() as session:
        rows, following = snapshot_store.page(
            session, team_id, sandbox_id=short_id(sandbox_id) if sandbox_id else None, name=name,
            limit=limit, after=next_token)
    if following is not None:
        response.headers["X-Next-Token"] = following
    return [_snapshot_json(r) for r in rows]


@router.delete("/templates/{snapshot_id:path}", status_code=204, include_in_schema=False)  # templates.py serves it
async def delete_snapshot(snapshot_id: str, request: Request, team_id: TeamId) -> Response:
    if not await manager(request).snapshots.delete(team_id, snapshot_id):
        raise APIError(404, f"Snapshot '{snapshot_id}' not found")
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/fork", status_code=201, responses=openapi.errors(404, 409, 429, 503, 507))
async def fork(sandbox_id: str, request: Request, team_id: TeamId, body: ForkBody | None = None) -> list[dict[str, Any]]:
    timeout = checked_timeout(request, body.timeout if body else None)
    count = 1 if body is None or body.count is None else body.count
    if not 1 <= count <= MAX_FORKS:
        raise APIError(400, f"Invalid count {count}: fork between 1 and {MAX_FORKS} sandboxes")
    results = await manager(request).fork(team_id, short_id(sandbox_id), count, timeout)
    domain = request.app.state.services.settings.domain
    out: list[dict[str, Any]] = []
    for item in results:
        if isinstance(item, (SandboxError, QuotaExceeded)):  # a 429 here is the team's sandbox quota
            out.append({"error": {"code": status_of(item), "message": domain_message(item)}})
        elif isinstance(item, Exception):
            out.append({"error": {"code": 500, "message": str(item)}})
        else:
            out.append({"sandbox": sandbox_json(item, domain)})
    return out
