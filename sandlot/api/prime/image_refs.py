"""``docker_image`` → Sandlot template: a Prime-built image, an existing E2B template, or a registry ref."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
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


def prime_image(session: Session, team_id: str, ref: str) -> PrimeImageBuild | None:
    """Newest live build the team may use whose ``fullImagePath`` (or pulled source ref) is ``ref``."""
    stmt = (
        select(PrimeImageBuild)
        .where(
            or_(PrimeImageBuild.full_image_path == ref, PrimeImageBuild.source_image == ref),
            PrimeImageBuild.deleted.is_(False),
            or_(PrimeImageBuild.team_id == team_id, PrimeImageBuild.visibility == "PUBLIC"),
            PrimeImageBuild.status.notin_(("FAILED", "CANCELLED")),
        )
        .order_by(PrimeImageBuild.created_at.desc())
    )
    for row in session.scalars(stmt):
        if image_builds.sync(session, row).status not in ("FAILED", "CANCELLED"):
            return row
    return None


def resolve(session: Session, team_id: str, ref: str) -> ImageChoice:
    build = prime_image(session, team_id, ref)
    if build is not None:
        if build.status == "COMPLETED":
            return ImageChoice(build.template_id, build.sandlot_build_id, image_config=dict(build.image_config or {}))
        return ImageChoice(pending_build_id=build.id)
    found = template_store.resolve_build(session, team_id, ref)
    if found is not None:
        return ImageChoice(found[0].id, found[1].id)
    return ImageChoice()
