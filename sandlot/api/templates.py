"""Template routes: list, detail with builds, alias lookup, visibility, delete, tags.

Route order matters: the literal ``/templates/tags`` and ``/templates/{id}/tags``
routes come before the ``/templates/{id:path}`` catch-alls.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictBool

from sandlot.api import limits
from sqlalchemy.orm import Session

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError
from sandlot.store import templates as template_store
from sandlot.store.models import Build, Template

KILL_SETTLE_S = 30.0
"""How long a template delete waits for kills still tearing down before it counts them as in use."""

router = APIRouter()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _template_json(session: Session, template: Template) -> dict[str, Any]:
    """``names`` are full (``team-slug/app``, E2B's namespaced form), ``aliases`` bare."""
    names = template_store.names(session, template)
    builds = template_store.builds(session, template.id)
    latest = builds[0] if builds else None
    ready = template_store.latest_ready_build(session, template.id)
    return {
        "templateID": template.id,
        "buildID": ready.id if ready else (latest.id if latest else ""),
        "cpuCount": template.cpu_count,
        "memoryMB": template.memory_mb,
        "diskSizeMB": template.disk_mb,
        "public": template.public,
        "aliases": template_store.aliases(session, template.id),
        "names": names,
        "createdAt": _iso(template.created_at),
        "updatedAt": _iso(template.updated_at),
        "createdBy": None,
        "lastSpawnedAt": _iso(template.last_spawned_at),
        "spawnCount": template.spawn_count,
        "buildCount": len(builds),
        "envdVersion": template.envd_version,
        "buildStatus": latest.status if latest else "waiting",
    }


def _build_json(build: Build) -> dict[str, Any]:
    data: dict[str, Any] = {
        "buildID": build.id,
        "status": build.status,
        "createdAt": _iso(build.created_at),
        "updatedAt": _iso(build.updated_at),
        "cpuCount": build.cpu_count,
        "memoryMB": build.memory_mb,
        "diskSizeMB": build.disk_mb,
        "envdVersion": build.envd_version,
        "templateID": build.template_id,
        "startedAt": _iso(build.created_at),
    }
    if build.finished_at:
        data["finishedAt"] = _iso(build.finished_at)
    return data


@router.get("/templates")
async def list_templates(request: Request, team_id: TeamId) -> list[dict[str, Any]]:
    with request.app.state.services.db.session() as session:
        return [_template_json(session, t) for t in template_store.visible(session, team_id)]


@router.get("/v2/templates", responses=openapi.errors(400))
async def list_templates_v2(request: Request, team_id: TeamId,
                            team: Annotated[str | None, Query(alias="teamID", max_length=64)] = None,
                            next_token: Annotated[str | None, Query(alias="nextToken", max_length=128)] = None,
                            limit: Annotated[int, Query(ge=1, le=100)] = 100) -> JSONResponse:
    """Newest first, ``limit`` per page, ``X-Next-Token`` while more remain; ``teamID`` must be
    the caller's own (400 otherwise, as E2B)."""
    if team is not None and team != team_id:
        raise APIError(400, "teamID does not match the team of the API key")
    offset = 0
    if next_token:
        if not next_token.isdigit():
            raise APIError(400, "Invalid nextToken")
        offset = int(next_token)
    with request.app.state.services.db.session() as session:
        templates = sorted(template_store.visible(session, team_id), key=lambda t: (t.created_at, t.id), reverse=True)
        page = templates[offset:offset + limit]
        body = [_template_json(session, t) for t in page]
    more = offset + limit < len(templates)
    return JSONResponse(body, headers={"X-Next-Token": str(offset + limit)} if more else None)


@router.get("/templates/aliases/{alias:path}", responses=openapi.errors(404))
async def get_alias(alias: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    """``Template.exists``/``alias_exists``: a bare name is looked up in the caller's namespace
    (then the built-ins), ``team-slug/name`` in that team's; another team's private template
    is 404 like a missing one (E2B answers 403, which would reveal it)."""
    with request.app.state.services.db.session() as session:
        template = template_store.resolve(session, team_id, alias)
        if template is None:
            raise APIError(404, f"Template alias '{alias}' not found")
        return {"templateID": template.id, "public": template.public}


# --- tags (before the catch-alls) -----------------------------------------------------------

class AssignTags(BaseModel):
    target: str = Field(min_length=1, max_length=400)
    tags: limits.Tags = Field(min_length=1)


class RemoveTags(BaseModel):
    name: str = Field(min_length=1, max_length=400)
    tags: limits.Tags = Field(min_length=1)


def _owned(session: Session, team_id: str, name_or_id: str) -> Template:
    template = template_store.resolve(session, team_id, name_or_id)
    if template is None or template.team_id != team_id:
        raise APIError(404, f"Template '{name_or_id}' not found")
    return template


@router.post("/templates/tags", status_code=201, responses=openapi.errors(404))
async def assign_tags(body: AssignTags, request: Request, team_id: TeamId) -> dict[str, Any]:
    """``target`` is ``name[:tag-or-buildID]``; the new tags point at that build."""
    from sandlot.api.builds import TAG

    for tag in body.tags:
        if not TAG.match(tag):
            raise APIError(400, f"Invalid tag '{tag}'")
    with request.app.state.services.db.session() as session, session.begin():
        name, ref = template_store.split_tag(body.target)
        template = _owned(session, team_id, name)
        build = template_store.get_build(session, template.id, ref) if ref else None
        if build is None:
            found = template_store.resolve_build(session, team_id, body.target)
            build = found[1] if found else None
        if build is None or build.status != "ready":
            raise APIError(404, f"No ready build matches '{body.target}'")
        template_store.assign_tags(session, template, build, body.tags)
        return {"buildID": build.id, "tags": body.tags}


@router.delete("/templates/tags", status_code=204, responses=openapi.errors(404))
async def delete_tags(body: RemoveTags, request: Request, team_id: TeamId) -> Response:
    with request.app.state.services.db.session() as session, session.begin():
        template = _owned(session, team_id, template_store.split_tag(body.name)[0])
        missing = template_store.remove_tags(session, template.id, body.tags)
        if missing:
            session.rollback()
            raise APIError(404, f"Tag(s) not found: {', '.join(missing)}")
    return Response(status_code=204)


@router.get("/templates/{template_id}/tags", responses=openapi.errors(404))
async def list_tags(template_id: str, request: Request, team_id: TeamId) -> list[dict[str, Any]]:
    with request.app.state.services.db.session() as session:
        template = template_store.resolve(session, team_id, template_id)
        if template is None:
            raise APIError(404, f"Template '{template_id}' not found")
        return [{"tag": t.tag, "buildID": t.build_id, "createdAt": _iso(t.created_at)}
                for t in template_store.tags(session, template.id)]


# --- management ------------------------------------------------------------------------------

class UpdateTemplate(BaseModel):
    public: StrictBool | None = None   # 0/"yes" are not booleans (the contract run sends them)


async def _update(template_id: str, body: UpdateTemplate, request: Request, team_id: str) -> dict[str, list[str]]:
    """E2B's ``TemplateUpdateResponse``: the template's full names (``e2b template publish``
    prints them as "Published as: …")."""
    with request.app.state.services.db.session() as session, session.begin():
        template = _owned(session, team_id, template_id)
        if body.public is not None:
            template.public = body.public
        return {"names": template_store.names(session, template)}


@router.patch("/templates/{template_id:path}", responses=openapi.errors(404))
async def update_template(template_id: str, body: UpdateTemplate, request: Request,
                          team_id: TeamId) -> dict[str, list[str]]:
    return await _update(template_id, body, request, team_id)


@router.patch("/v2/templates/{template_id:path}", responses=openapi.errors(404))
async def update_template_v2(template_id: str, body: UpdateTemplate, request: Request,
                             team_id: TeamId) -> dict[str, list[str]]:
    return await _update(template_id, body, request, team_id)


@router.delete("/templates/{template_id:path}", status_code=204, responses=openapi.errors(404, 409))
async def delete_template(template_id: str, request: Request, team_id: TeamId) -> Response:
    """Refuses (409) while sandboxes or a build use the template; snapshot ids go to the snapshot route.

    Layers stay in the content-keyed cache (other templates may share them); the
    builds' post-ready snapshots and warm-pool sandboxes go with them."""
    services = request.app.state.services
    snapshots: list[str] | None = None
    build_ids: set[str] = set()
    # a kill answers before its teardown ends (the row stays 'killing' until then), so
    # `kill(); Template.delete()` waits for teardowns in flight rather than answer 409
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(services.sandboxes.settled(), timeout=KILL_SETTLE_S)
    with services.db.session() as session, session.begin():
        template = template_store.resolve(session, team_id, template_id)
        if template is not None and template.team_id == team_id:
            running = template_store.live_sandboxes(session, template.id)
            if running:
                raise APIError(409, f"Template '{template_id}' is used by {running} sandbox(es); kill them first")
            if any(services.builder and services.builder.running(b.id) for b in template_store.builds(session, template.id)):
                raise APIError(409, f"Template '{template_id}' has a build in progress")
            snapshots, build_ids = template_store.delete_template(session, template)
    if snapshots is not None:
        await services.sandboxes.pool.drop(build_ids)
        await services.sandboxes.ready_snapshots.discard(snapshots)
        return Response(status_code=204)
    from sandlot.api import snapshots as snapshot_routes

    return await snapshot_routes.delete_snapshot(template_id, request, team_id)


@router.get("/templates/{template_id:path}", responses=openapi.errors(404))
async def get_template(template_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    with request.app.state.services.db.session() as session:
        template = template_store.resolve(session, team_id, template_id)
        if template is None:
            raise APIError(404, f"Template '{template_id}' not found")
        data = _template_json(session, template)
        data["builds"] = [_build_json(b) for b in template_store.builds(session, template.id)]
        return data
