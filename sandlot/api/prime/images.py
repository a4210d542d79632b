"""Prime ``/api/v1/images`` routes: initiate a build, upload its context, start, poll, list, delete."""

from __future__ import annotations

import os
import secrets
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.responses import JSONResponse

from sandlot import quotas
from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime import image_builds
from sandlot.api.prime.context import PrimeContext, prime
from sandlot.api.prime.errors import PrimeError, not_found, parse_body
from sandlot.api.prime.shapes import iso
from sandlot.store import templates as template_store
from sandlot.store.models import PrimeImageBuild

router = APIRouter(prefix="/api/v1")

UPLOAD_TTL_S = 3600
MAX_CONTEXT_BYTES = 4 << 30


class BuildBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    image_name: str | None = Field(None, validation_alias=AliasChoices("image_name", "imageName"), max_length=255)
    image_tag: str | None = Field(None, validation_alias=AliasChoices("image_tag", "imageTag"), max_length=128)
    dockerfile_path: str = Field("Dockerfile", validation_alias=AliasChoices("dockerfile_path", "dockerfilePath"),
                                 max_length=1024)
    source_image: str | None = Field(None, validation_alias=AliasChoices("source_image", "sourceImage"),
                                     max_length=1024)
    platform: str = Field("linux/amd64", max_length=64)
    visibility: str | None = Field(None, max_length=32)
    team_id: str | None = Field(None, validation_alias=AliasChoices("team_id", "teamId"), max_length=64)


class StartBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    context_uploaded: bool = True


def build_json(row: PrimeImageBuild) -> dict[str, Any]:
    """The logical build group with its single ``VM_SANDBOX`` artifact (seed "Start Image Build")."""
    return {
        "id": row.id,
        "imageName": row.image_name,
        "imageTag": row.image_tag,
        "status": row.status,
        "createdAt": iso(row.created_at),
        "startedAt": iso(row.started_at),
        "completedAt": iso(row.completed_at),
        "errorMessage": row.error_message,
        "fullImagePath": row.full_image_path,
        "artifacts": [
            {
                "id": row.artifact_id,
                "status": row.status,
                "createdAt": iso(row.created_at),
                "artifactType": "VM_SANDBOX",
                "fullImagePath": row.full_image_path,
                "errorMessage": row.error_message,
                "startedAt": iso(row.started_at),
                "completedAt": iso(row.completed_at),
            }
        ],
    }


def image_json(row: PrimeImageBuild) -> dict[str, Any]:
    return {
        "id": row.artifact_id,
        "artifactType": "VM_SANDBOX",
        "imageName": row.image_name,
        "imageTag": row.image_tag,
        "status": row.status,
        "fullImagePath": row.full_image_path,
        "errorMessage": row.error_message,
        "sizeBytes": row.size_bytes,
        "visibility": row.visibility,
        "createdAt": iso(row.created_at),
        "startedAt": iso(row.started_at),
        "completedAt": iso(row.completed_at),
        "pushedAt": iso(row.completed_at) if row.status == "COMPLETED" else None,
        "teamId": None,
        "ownerType": "personal",
        "displayRef": row.full_image_path,
    }


def _check_platform(platform: str) -> None:
    if platform not in ("linux/amd64", "linux/arm64"):
        raise PrimeError(422, f"platform must be linux/amd64 or linux/arm64, got {platform!r}")
    if platform == "linux/arm64" and os.uname().machine not in ("aarch64", "arm64"):
        raise PrimeError(400, "linux/arm64 images cannot run on this Sandlot server (it is not arm64)")


@router.post("/images/build", status_code=201, responses=openapi.prime_errors(400, 429), openapi_extra=openapi.body(BuildBody))
async def initiate_build(request: Request, team_id: TeamId) -> JSONResponse:
    body = await parse_body(request, BuildBody)
    _check_platform(body.platform)
    ctx = prime(request)
    if body.source_image and "," in body.source_image:
        raise PrimeError(400, "Comma-separated source images are not supported by this Sandlot server; send one per request")
    if body.source_image:
        default_name, default_tag = image_builds.source_names(body.source_image)
        name, tag = body.image_name or default_name, body.image_tag or default_tag
    else:
        if not body.image_name or not body.image_tag:
            raise PrimeError(422, "image_name and image_tag are required for Dockerfile builds")
        name, tag = body.image_name, body.image_tag
    if not image_builds.NAME.match(name):
        raise PrimeError(422, f"Invalid image name {name!r}: lowercase letters, digits, '.', '_', '-'")
    if not image_builds.TAG.match(tag):
        raise PrimeError(422, f"Invalid image tag {tag!r}")
    visibility = body.visibility if body.visibility in ("PUBLIC", "PRIVATE") else "PRIVATE"
    row = image_builds.new_row(
        team_id, name, tag, source_image=body.source_image,
        dockerfile_path=None if body.source_image else body.dockerfile_path, platform=body.platform, visibility=visibility,
    )
    with ctx.services.db.session() as session, session.begin():
        session.add(row)
    response: dict[str, Any] = {
        "build_id": row.id,
        "buildIds": [row.id],
        "fullImagePath": row.full_image_path,
        "visibility": visibility,
    }
    if body.source_image:
        _build_quota(ctx, team_id)
        await image_builds.start(ctx, row.id)
    else:
        token, _ = ctx.signer.issue(f"context:{row.id}", team_id, UPLOAD_TTL_S)
        base = str(request.base_url).rstrip("/")
        response.update({"upload_url": f"{base}/api/v1/images/build/{row.id}/context?token={token}", "expires_in": UPLOAD_TTL_S})
    return JSONResponse(response, 201)


@router.put("/images/build/{build_id}/context", status_code=200, responses=openapi.prime_errors(403, 404, 409, 413, 429))
async def upload_context(build_id: str, token: str, request: Request) -> dict[str, Any]:
    """The presigned upload: authenticated by the URL's token alone (the CLI sends no API key)."""
    ctx = prime(request)
    claims = ctx.signer.verify(token)
    if claims is None or claims.sandbox_id != f"context:{build_id}":
        raise PrimeError(403, "Invalid or expired upload URL")
    with ctx.services.db.session() as session:
        row = session.get(PrimeImageBuild, build_id)
        if row is None or row.team_id != claims.team_id:
            raise not_found("Build", build_id)
        if row.status != "PENDING":
            raise PrimeError(409, f"Build {build_id} is {row.status}; its context can no longer change")
    final = image_builds.context_path(ctx, build_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + f".{secrets.token_hex(4)}.part")
    size = 0
    with ctx.services.db.session() as session:
        stored, limit = quotas.upload_budget(session, ctx.services.settings, claims.team_id)
    chunks = quotas.UPLOADS.metered(claims.team_id, stored, limit, request.stream(), error=PrimeError)
    try:
        with open(partial, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_CONTEXT_BYTES:
                    raise PrimeError(413, f"Build contexts are limited to {MAX_CONTEXT_BYTES >> 30} GiB")
                handle.write(chunk)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return {"success": True, "size": size}


def _build_quota(ctx: PrimeContext, team_id: str) -> None:
    """Prime's 429 when the team runs its limit of builds; ``image_builds.start`` re-checks
    where the build is marked running (a race there fails the build with the same message)."""
    with ctx.services.db.session() as session, session.begin():
        quotas.reserve_build(session, ctx.services.settings, team_id, error=PrimeError)


def _owned(ctx: PrimeContext, team_id: str, build_id: str) -> dict[str, Any]:
    with ctx.services.db.session() as session, session.begin():
        row = session.get(PrimeImageBuild, build_id)
        if row is None or row.team_id != team_id:
            raise not_found("Build", build_id)
        return build_json(image_builds.sync(session, row))


@router.post("/images/build/{build_id}/start", responses=openapi.prime_errors(404, 409, 429),
              openapi_extra=openapi.body(StartBody))
async def start_build(build_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    await parse_body(request, StartBody)
    ctx = prime(request)
    current = _owned(ctx, team_id, build_id)
    if current["status"] != "PENDING":
        return current  # starting twice is a no-op
    if not image_builds.context_path(ctx, build_id).is_file():
        raise PrimeError(409, f"The build context of {build_id} has not been uploaded yet: PUT it to upload_url first")
    _build_quota(ctx, team_id)
    await image_builds.start(ctx, build_id)
    return _owned(ctx, team_id, build_id)


@router.get("/images/build/{build_id}", responses=openapi.prime_errors(404))
async def get_build(build_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    return _owned(prime(request), team_id, build_id)


def _team_builds(ctx: PrimeContext, team_id: str) -> list[PrimeImageBuild]:
    with ctx.services.db.session() as session, session.begin():
        stmt = (
            select(PrimeImageBuild)
            .where(PrimeImageBuild.team_id == team_id, PrimeImageBuild.deleted.is_(False))
            .order_by(PrimeImageBuild.created_at.desc())
        )
        rows = [image_builds.sync(session, row) for row in session.scalars(stmt)]
        session.expunge_all()
        return rows


@router.get("/images/builds")
async def list_builds(
    request: Request, team_id: TeamId, offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=250)
) -> dict[str, Any]:
    rows = _team_builds(prime(request), team_id)
    return {"total_count": len(rows), "offset": offset, "limit": limit, "data": [build_json(r) for r in rows[offset : offset + limit]]}


@router.get("/images")
async def list_images(
    request: Request,
    team_id: TeamId,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=250),
    search: str | None = None,
) -> dict[str, Any]:
    """One row per ``name:tag``: its newest build."""
    latest: dict[tuple[str, str], PrimeImageBuild] = {}
    for row in _team_builds(prime(request), team_id):
        latest.setdefault((row.image_name, row.image_tag), row)
    rows = [r for r in latest.values() if not search or search.lower() in f"{r.image_name}:{r.image_tag}".lower()]
    return {"data": [image_json(r) for r in rows[offset : offset + limit]], "totalCount": len(rows), "offset": offset, "limit": limit}


@router.delete("/images/{image_name}/{image_tag}", responses=openapi.prime_errors(404))
async def delete_image(image_name: str, image_tag: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        stmt = select(PrimeImageBuild).where(
            PrimeImageBuild.team_id == team_id,
            PrimeImageBuild.image_name == image_name,
            PrimeImageBuild.image_tag == image_tag,
            PrimeImageBuild.deleted.is_(False),
        )
        rows = list(session.scalars(stmt))
        if not rows:
            raise not_found("Image", f"{image_name}:{image_tag}")
        for row in rows:
            row.deleted = True
        template_ids = {r.template_id for r in rows if r.template_id}
        for template_id in template_ids:
            template_store.remove_tags(session, template_id, [image_tag])
    return {"success": True, "message": f"Image {image_name}:{image_tag} deleted"}



