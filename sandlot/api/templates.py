"""Template read routes: list, detail with builds, alias lookup."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError
from sandlot.store import templates as template_store
from sandlot.store.models import Build, Template

router = APIRouter()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _template_json(session: Session, template: Template) -> dict[str, Any]:
    names = template_store.aliases(session, template.id)
    builds = template_store.builds(session, template.id)
    latest = builds[0] if builds else None
    return {
        "templateID": template.id,
        "buildID": latest.id if latest else "",
        "cpuCount": template.cpu_count,
        "memoryMB": template.memory_mb,
        "diskSizeMB": template.disk_mb,
        "public": template.public,
        "aliases": names,
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
    }
    if build.finished_at:
        data["finishedAt"] = _iso(build.finished_at)
    return data


@router.get("/templates")
async def list_templates(request: Request, team_id: TeamId) -> list[dict[str, Any]]:
    with request.app.state.services.db.session() as session:
        return [_template_json(session, t) for t in template_store.visible(session, team_id)]


@router.get("/templates/aliases/{alias:path}")
async def get_alias(alias: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    with request.app.state.services.db.session() as session:
        template = template_store.resolve(session, team_id, alias)
        if template is None:
            raise APIError(404, f"Template alias '{alias}' not found")
        return {"templateID": template.id, "public": template.public}


@router.get("/templates/{template_id:path}")
async def get_template(template_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    with request.app.state.services.db.session() as session:
        template = template_store.resolve(session, team_id, template_id)
        if template is None:
            raise APIError(404, f"Template '{template_id}' not found")
        data = _template_json(session, template)
        data["builds"] = [_build_json(b) for b in template_store.builds(session, template.id)]
        return data
