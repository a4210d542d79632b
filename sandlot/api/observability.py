"""Sandbox metrics and logs (E2B ``/sandboxes/{id}/metrics``, ``/sandboxes/metrics``, ``…/logs``)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError, not_found_sandbox
from sandlot.api.sandboxes import manager, short_id
from sandlot.orchestrator.events import LogEntry
from sandlot.store import sandboxes as sandbox_store

router = APIRouter()

MAX_METRICS_IDS = 100


def _owned(request: Request, team_id: str, sandbox_id: str) -> str:
    short = short_id(sandbox_id)
    with request.app.state.services.db.session() as session:
        if sandbox_store.get_for_team(session, team_id, short) is None:
            raise not_found_sandbox(sandbox_id)
    return short


def _from_unix(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value is not None else None


@router.get("/sandboxes/metrics", responses=openapi.errors(400))
async def many_metrics(
    request: Request, team_id: TeamId, sandbox_ids: str = Query(..., min_length=1)
) -> dict[str, Any]:
    ids = [s.strip() for s in sandbox_ids.split(",") if s.strip()]
    if len(ids) > MAX_METRICS_IDS:
        raise APIError(400, f"At most {MAX_METRICS_IDS} sandbox ids per request")
    sandboxes = manager(request)
    result: dict[str, Any] = {}
    with request.app.state.services.db.session() as session:
        owned = [i for i in ids if sandbox_store.get_for_team(session, team_id, i) is not None]
    for sandbox_id in owned:
        sample = sandboxes.metrics.latest(sandbox_id) or await sandboxes.metrics.sample_now(sandbox_id)
        if sample is not None:
            result[sandbox_id] = sample.to_json()
    return {"sandboxes": result}


@router.get("/sandboxes/{sandbox_id}/metrics", responses=openapi.errors(404))
async def metrics(
    sandbox_id: str, request: Request, team_id: TeamId, start: int | None = None, end: int | None = None
) -> list[dict[str, Any]]:
    short = _owned(request, team_id, sandbox_id)
    sampler = manager(request).metrics
    if sampler.latest(short) is None:
        await sampler.sample_now(short)
    return [s.to_json() for s in sampler.series(short, _from_unix(start), _from_unix(end))]


def _filter_entries(entries: list[LogEntry], level: str | None) -> list[LogEntry]:
    order = {"debug": 0, "info": 1, "warn": 2, "error": 3}
    if level is None:
        return entries
    if level not in order:
        raise APIError(400, f"Invalid level {level!r}: use debug, info, warn or error")
    return [e for e in entries if order.get(e.level, 1) >= order[level]]


def _json_line(entry: LogEntry) -> str:
    return json.dumps({"level": entry.level, "logger": "sandlot.lifecycle", "message": entry.message, **entry.fields})


@router.get("/sandboxes/{sandbox_id}/logs", responses=openapi.errors(404))
async def logs_v1(
    sandbox_id: str, request: Request, team_id: TeamId, start: int | None = None, limit: int = Query(1000, ge=1, le=10_000)
) -> dict[str, Any]:
    short = _owned(request, team_id, sandbox_id)
    since = datetime.fromtimestamp(start / 1000, timezone.utc) if start is not None else None
    entries = [e for e in manager(request).events.read(short) if since is None or e.timestamp >= since][:limit]
    return {
        # E2B's v1 lines are envd's JSON log records; the e2b CLI parses them (level, logger)
        "logs": [{"timestamp": e.to_json()["timestamp"], "line": _json_line(e)} for e in entries],
        "logEntries": [e.to_json() for e in entries],
    }


@router.get("/v2/sandboxes/{sandbox_id}/logs", responses=openapi.errors(404))
async def logs_v2(
    sandbox_id: str,
    request: Request,
    team_id: TeamId,
    cursor: int | None = None,
    limit: int = Query(1000, ge=1, le=10_000),
    direction: str = "forward",
    level: str | None = None,
    search: str | None = None,
) -> dict[str, Any]:
    short = _owned(request, team_id, sandbox_id)
    if direction not in ("forward", "backward"):
        raise APIError(400, f"Invalid direction {direction!r}: use forward or backward")
    entries = _filter_entries(manager(request).events.read(short), level)
    if search:
        entries = [e for e in entries if search in e.message]
    if cursor is not None:
        edge = datetime.fromtimestamp(cursor / 1000, timezone.utc)
        entries = [e for e in entries if (e.timestamp >= edge if direction == "forward" else e.timestamp <= edge)]
    if direction == "backward":
        entries = list(reversed(entries))
    return {"logs": [e.to_json() for e in entries[:limit]]}
