"""Built-in public templates (``code-interpreter-v1``, ``mcp-gateway``) built by Sandlot's own
pipeline at start-up: one recipe tag per recipe, so an upgrade that changes a recipe rebuilds
once, and unchanged steps come from the layer cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from sandlot.store import keys
from sandlot.store import templates as template_store
from sandlot.store.models import TemplateTag
from sandlot.templates.builder import BuildRequest

if TYPE_CHECKING:
    from sandlot.services import Services

log = structlog.get_logger("sandlot.templates")


def ensure_built(services: Services, *, name: str, tag: str, memory_mb: int,
                 request: Callable[[str], BuildRequest]) -> str | None:
    """Submit a build of the default team's public template ``name`` unless one tagged
    ``tag`` is ready or a build of it is running; returns the new build's id. ``request``
    makes the build request for the team id. The build runs in the background."""
    settings, builder = services.settings, services.builder
    assert builder is not None
    from sandlot.orchestrator.requests import ENVD_VERSION

    with services.db.session() as session, session.begin():
        team = keys.get_or_create_default_team(session)
        template = template_store.find_named(session, team.id, name)  # names are per team (0007)
        if template is not None:
            if template.team_id != team.id:
                log.warning(f"not building {name}: the name belongs to another team's template")
                return None
            if session.get(TemplateTag, (template.id, tag)) is not None:
                return None
            if any(b.status in ("waiting", "building") and (builder.running(b.id) or builder.runs_elsewhere(b))
                   for b in template_store.builds(session, template.id)):
                return None
        template, build = template_store.request_build(
            session, team_id=team.id, name=name, tags=[template_store.DEFAULT_TAG, tag],
            cpu_count=settings.default_cpu_count, memory_mb=memory_mb, disk_mb=settings.default_disk_mb,
            envd_version=ENVD_VERSION,
        )
        template.public = True
        build.status = "building"
        build_id, team_id = build.id, team.id
    builder.submit(build_id, request(team_id))
    log.info(f"building the {name} template in the background", build_id=build_id)
    return build_id
