"""``PATCH /api/v1/images``: Prime's batch of logical-image updates (``prime images publish|unpublish|update``).

Visibility changes apply (a PUBLIC image is one other teams may run by its ``fullImagePath``).
Renames (``name``/``tag``) and owner moves (to another team or the platform) answer a per-item
``UNSUPPORTED`` error: an image is also an E2B template of its name, and sandboxes name it by
path. A request-level problem is a 422; item failures come back in ``results``, as on Prime.
Only the caller's own team's images are ever found: another team's is ``NOT_FOUND``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime import image_builds
from sandlot.api.prime.context import prime
from sandlot.api.prime.errors import PrimeError, parse_body
from sandlot.store.models import PrimeImageBuild

router = APIRouter(prefix="/api/v1")

Text = Annotated[str, Field(min_length=1, max_length=255)]


class ImageOwnerRef(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: Literal["personal", "team", "platform"]
    team_id: str | None = Field(None, alias="teamId", max_length=64)


class ImageUpdateSource(BaseModel):
    model_config = ConfigDict(extra="ignore")
    owner: ImageOwnerRef | None = None
    name: Text | None = None
    tag: Text | None = None
    reference: Annotated[str, Field(min_length=1, max_length=1024)] | None = None


class ImageUpdatePatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Text | None = None
    tag: Text | None = None
    owner: ImageOwnerRef | None = None
    visibility: Literal["PUBLIC", "PRIVATE"] | None = None


class ImageUpdateItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source: ImageUpdateSource
    set: ImageUpdatePatch


class ImageUpdatesBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    mode: Literal["explicit"] = "explicit"
    dry_run: bool = Field(False, alias="dryRun")
    updates: Annotated[list[ImageUpdateItem], Field(min_length=1, max_length=100)]


def _coordinates(team_id: str, source: ImageUpdateSource) -> tuple[str, str] | None:
    """(name, tag) of the caller's image the source names; ``None`` for anything else."""
    if source.reference is not None:
        ref = source.reference.removeprefix("prime/")
        namespace, _, rest = ref.rpartition("/")
        if namespace and namespace != image_builds.owner(team_id):
            return None
        name, _, tag = rest.rpartition(":")
        return (name, tag) if name and tag else None
    if source.owner is None or source.name is None or source.tag is None:
        return None
    if source.owner.type == "platform":
        return None
    if source.owner.type == "team" and source.owner.team_id != team_id:
        return None
    return source.name, source.tag


def _rows(session: Session, team_id: str, name: str, tag: str) -> list[PrimeImageBuild]:
    stmt = select(PrimeImageBuild).where(PrimeImageBuild.team_id == team_id, PrimeImageBuild.image_name == name,
                                         PrimeImageBuild.image_tag == tag, PrimeImageBuild.deleted.is_(False))
    return list(session.scalars(stmt.order_by(PrimeImageBuild.created_at.desc())))


def _state(name: str, tag: str, visibility: str) -> dict[str, Any]:
    return {"owner": {"type": "personal"}, "name": name, "tag": tag, "visibility": visibility}


def _unsupported(team_id: str, name: str, tag: str, patch: ImageUpdatePatch) -> str | None:
    if (patch.name is not None and patch.name != name) or (patch.tag is not None and patch.tag != tag):
        return "Renaming or re-tagging images is not supported by this Sandlot server; push it again under the new name"
    owner = patch.owner
    if owner is not None and not (owner.type == "personal" or (owner.type == "team" and owner.team_id == team_id)):
        return "Moving images to another team or to the platform is not supported by this Sandlot server"
    return None


def _apply(session: Session, team_id: str, update: ImageUpdateItem, dry_run: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"source": update.source.model_dump(by_alias=True, exclude_none=True), "success": False,
                              "before": None, "after": None, "error": None}
    found = _coordinates(team_id, update.source)
    rows = _rows(session, team_id, *found) if found is not None else []
    if found is None or not rows:
        result["error"] = {"code": "NOT_FOUND", "message": "Image not found"}
        return result
    name, tag = found
    before = rows[0].visibility
    result["before"] = _state(name, tag, before)
    reason = _unsupported(team_id, name, tag, update.set)
    if reason is not None:
        result["error"] = {"code": "UNSUPPORTED", "message": reason}
        return result
    after = update.set.visibility or before
    if not dry_run:
        for row in rows:
            row.visibility = after
    result["success"], result["after"] = True, _state(name, tag, after)
    return result


@router.patch("/images", responses=openapi.prime_errors(422), openapi_extra=openapi.body(ImageUpdatesBody))
async def update_images(request: Request, team_id: TeamId) -> dict[str, Any]:
    body = await parse_body(request, ImageUpdatesBody)
    for update in body.updates:
        if update.set.model_dump(exclude_none=True) == {}:
            raise PrimeError(422, "set must change at least one field")
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        results = [_apply(session, team_id, update, body.dry_run) for update in body.updates]
    return {"success": all(r["success"] for r in results), "dryRun": body.dry_run, "results": results}
