"""``docker_image`` → Sandlot template: a Prime-built image, an existing E2B template, or a registry ref."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandlot.api.prime import image_builds
from sandlot.store import templates as template_store
from sandlot.store.models import PrimeImageBuild


@dataclass
class ImageChoice:
    template_id: str | None = None
    build_id: str | None = None
    pending_build_id: str | None = None
    """A Prime image build still running: the sandbox waits for it (``pendingImageBuildId``)."""
    image_config: dict[str, Any] = field(default_factory=dict)
    """startCommand/user/workdir from the image's Dockerfile."""

    @property
    def registry_pull(self) -> bool:
        return self.template_id is None and self.pending_build_id is None


def resolve(session: Session, team_id: str, ref: str) -> ImageChoice:
    """A Prime image, else a template the ref names explicitly (the team's own bare name, a
    built-in such as ``base``, or ``team-slug/name[:tag]``, ``store/templates.resolve``), else
    the registry: another team's template is never a registry reference's stand-in."""
    build = image_builds.prime_image(session, team_id, ref)
    if build is not None:
        if build.status == "COMPLETED":
            return ImageChoice(build.template_id, build.sandlot_build_id, image_config=dict(build.image_config or {}))
        return ImageChoice(pending_build_id=build.id)
    found = template_store.resolve_build(session, team_id, ref)
    if found is not None and not _pulled_elsewhere(session, team_id, ref, found[1].id):
        return ImageChoice(found[0].id, found[1].id)
    return ImageChoice()


def _pulled_elsewhere(session: Session, team_id: str, ref: str, build_id: str) -> bool:
    """The team's own ``name:tag`` is a pull of *another* registry ref (``ghcr.io/x/python:3``
    lands on ``python:3`` too): ``ref`` then means the registry, not that pull."""
    stmt = select(PrimeImageBuild.source_image).where(
        PrimeImageBuild.team_id == team_id, PrimeImageBuild.sandlot_build_id == build_id,
        PrimeImageBuild.source_image.is_not(None),
    )
    return any(source != ref for source in session.scalars(stmt))
