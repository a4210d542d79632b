"""Templates and builds: list, a template's builds and tags, a build's status with live logs, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from sandlot.api import templates as template_routes
from sandlot.api.builds import owned_build, owned_template
from sandlot.api.errors import APIError
from sandlot.dashboard import common
from sandlot.dashboard.sessions import DashSession
from sandlot.store import templates as template_store

router = APIRouter()
Team = Depends(common.team_session)
LOG_PAGE = 200
FINISHED = ("ready", "error")


@router.get("/templates")
async def templates_page(request: Request, dash: DashSession = Team) -> Response:
    team = common.team_id(dash)
    items = []
    with common.services(request).db.session() as session:
        for template in template_store.visible(session, team):
            builds = template_store.builds(session, template.id)
            items.append({"t": template, "names": template_store.names(session, template),
                          "latest": builds[0] if builds else None, "own": template.team_id == team,
                          "tags": [t.tag for t in template_store.tags(session, template.id)]})
    return common.render(request, "templates.html", {"page": "templates", "items": items})


@router.get("/templates/{template_id}")
async def template_page(template_id: str, request: Request, dash: DashSession = Team) -> Response:
    with common.services(request).db.session() as session:
        try:
            template = owned_template(session, common.team_id(dash), template_id)
        except APIError as exc:
            raise HTTPException(404, exc.message) from None
        builds = [{"b": b, "tags": template_store.build_tags(session, b.id)}
                  for b in template_store.builds(session, template.id)]
        names = template_store.names(session, template)
    return common.render(request, "template.html", {"page": "templates", "t": template, "names": names,
                                                    "builds": builds})


@router.post("/templates/{template_id}/delete")
async def delete_template(template_id: str, request: Request, dash: DashSession = Team) -> Response:
    await common.check_csrf(request, dash)
    try:   # the API route's own checks (in-use 409, running builds) and clean-up
        await template_routes.delete_template(template_id, request, common.team_id(dash))
        common.flash(dash, f"Template {template_id} deleted")
        return RedirectResponse("/dashboard/templates", status_code=303)
    except APIError as exc:
        common.flash(dash, exc.message, error=True)
        return RedirectResponse(f"/dashboard/templates/{template_id}", status_code=303)


def _build(request: Request, dash: DashSession, template_id: str, build_id: str) -> tuple[str, str, str]:
    with common.services(request).db.session() as session:
        try:
            template, build = owned_build(session, common.team_id(dash), template_id, build_id)
        except APIError as exc:
            raise HTTPException(404, exc.message) from None
        return template.id, build.id, build.status


@router.get("/templates/{template_id}/builds/{build_id}")
async def build_page(template_id: str, build_id: str, request: Request, dash: DashSession = Team) -> Response:
    tid, bid, status = _build(request, dash, template_id, build_id)
    with common.services(request).db.session() as session:
        build = template_store.get_build(session, tid, bid)
        tags = template_store.build_tags(session, bid)
    return common.render(request, "build.html", {"page": "templates", "tid": tid, "bid": bid, "status": status,
                                                 "build": build, "tags": tags})


@router.get("/templates/{template_id}/builds/{build_id}/logs")
async def build_logs(template_id: str, build_id: str, request: Request, offset: int = 0,
                     dash: DashSession = Team) -> Response:
    """New log lines from ``offset`` and a poller for the next ones while the build runs (htmx)."""
    tid, bid, status = _build(request, dash, template_id, build_id)
    with common.services(request).db.session() as session:
        rows = template_store.read_logs(session, bid, offset=max(offset, 0), limit=LOG_PAGE)
        lines = [{"at": r.timestamp, "level": r.level, "message": r.message, "step": r.step} for r in rows]
    more = len(rows) == LOG_PAGE or status not in FINISHED
    return common.render(request, "build_logs.html", {"tid": tid, "bid": bid, "lines": lines, "status": status,
                                                      "next": max(offset, 0) + len(rows), "more": more})
