"""Team: API keys (create — shown once — and revoke), usage over time, quotas."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sandlot import quotas
from sandlot.dashboard import common
from sandlot.dashboard.sessions import DashSession
from sandlot.store import keys, team_metrics
from sandlot.store.models import SandboxRun, Snapshot, Team

router = APIRouter()
TeamDep = Depends(common.team_session)
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def sandbox_hours(session: Session, team_id: str, since: datetime, until: datetime) -> float:
    """Hours of sandboxes running within ``[since, until]``, from the team's run records."""
    stmt = select(SandboxRun.started_at, SandboxRun.ended_at).where(
        SandboxRun.team_id == team_id, SandboxRun.started_at <= until)
    total = 0.0
    for started, ended in session.execute(stmt):
        start, end = max(started, since), min(ended or until, until)
        if end > start:
            total += (end - start).total_seconds()
    return total / 3600


def _quotas(session: Session, request: Request, team_id: str) -> list[dict[str, Any]]:
    settings = common.services(request).settings
    snapshots = session.scalar(select(func.count()).select_from(Snapshot).where(Snapshot.team_id == team_id)) or 0
    used = {"concurrent_sandboxes": quotas.running_sandboxes(session, team_id), "snapshots": snapshots,
            "concurrent_builds": quotas.running_builds(session, team_id),
            "upload_bytes": quotas.stored_upload_bytes(session, settings, team_id)}
    return [{"kind": kind, "used": used[kind], "limit": quotas.team_limit(session, settings, team_id, kind)}
            for kind in quotas.KINDS]


@router.get("/team")
async def team_page(request: Request, dash: DashSession = TeamDep) -> Response:
    team_id = common.team_id(dash)
    now = datetime.now(timezone.utc)
    with common.services(request).db.session() as session:
        team = session.get(Team, team_id)
        rows = keys.team_keys(session, team_id)
        usage = {name: round(sandbox_hours(session, team_id, now - span, now), 3) for name, span in RANGES.items()}
        limits = _quotas(session, request, team_id)
    new_key = dash.new_key
    dash.new_key = None   # shown once
    return common.render(request, "team.html", {"page": "team", "team": team, "keys": rows, "usage": usage,
                                                "quotas": limits, "new_key": new_key, "ranges": list(RANGES)})


@router.get("/team/usage.json")
async def usage(request: Request, range: str = "24h", dash: DashSession = TeamDep) -> Response:
    span = RANGES.get(range, RANGES["24h"])
    now = datetime.now(timezone.utc)
    with common.services(request).db.session() as session:
        points = team_metrics.series(session, common.team_id(dash), now - span, now)
    return JSONResponse([p.to_json() for p in points])


@router.post("/team/keys")
async def create_key(request: Request, dash: DashSession = TeamDep) -> Response:
    await common.check_csrf(request, dash)
    form = await request.form()
    name = str(form.get("name") or "").strip()[:255] or "dashboard"
    with common.services(request).db.session() as session, session.begin():
        team = session.get(Team, common.team_id(dash))
        assert team is not None
        _row, key = keys.add_key(session, team, name)
    dash.new_key = key   # rendered once on the next team page, never in a URL
    return RedirectResponse("/dashboard/team", status_code=303)


@router.post("/team/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, dash: DashSession = TeamDep) -> Response:
    await common.check_csrf(request, dash)
    with common.services(request).db.session() as session, session.begin():
        row = keys.team_key(session, common.team_id(dash), key_id[:64])
        if row is None:
            common.flash(dash, "No such key", error=True)
        else:
            common.flash(dash, f"Key '{row.name}' revoked")
            session.delete(row)
    return RedirectResponse("/dashboard/team", status_code=303)
