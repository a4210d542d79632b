"""Template build routes (E2B v3 flow): request a build, upload COPY files, start, poll.

``POST /v3/templates`` → ``GET /templates/{id}/files/{hash}`` (+ ``PUT`` of the
archive to the returned URL, no API key) → ``POST /v2/templates/{id}/builds/{build}``
→ ``GET /templates/{id}/builds/{build}/status?logsOffset=N``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from sandlot.api import limits, openapi
from sandlot.api.auth import TeamId
from sandlot import quotas
from sandlot.api.errors import APIError
from sandlot.orchestrator.requests import ENVD_VERSION
from sandlot.quotas import NO_RETRY
from sandlot.store import templates as template_store
from sandlot.store.models import Build, BuildLogEntry, Template
from sandlot.templates import steps as build_steps
from sandlot.templates.builder import BASE_IMAGES, BuildRequest, TemplateBuilder
from sandlot.templates.oci import PullError
from sandlot.templates.steps import FILES_HASH
from sandlot.templates.uploads import UploadError, UploadTooLarge

if TYPE_CHECKING:
    from sandlot.services import Services

router = APIRouter()

NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?(/[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?)?$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_LOG_PAGE = 100


def builder(request: Request) -> TemplateBuilder:
    services: Services = request.app.state.services
    if services.builder is None:  # build_services always makes one; only a hand-built Services lacks it
        raise RuntimeError("this server has no template builder")
    return services.builder


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def check_name(name: str) -> tuple[str, str | None]:
    base, tag = template_store.split_tag(name)
    if not NAME.match(base):
        raise APIError(400, f"Invalid template name '{base}': use lowercase letters, digits, '.', '_', '-' (and one '/')")
    if tag is not None and not TAG.match(tag):
        raise APIError(400, f"Invalid tag '{tag}'")
    return base, tag


def owned_template(session: Session, team_id: str, template_id: str) -> Template:
    """The team's own template (by id or name); others' are 404 (existence not revealed)."""
    template = template_store.resolve(session, team_id, template_id)
    if template is None or template.team_id != team_id:
        raise APIError(404, f"Template '{template_id}' not found")
    return template


def owned_build(session: Session, team_id: str, template_id: str, build_id: str) -> tuple[Template, Build]:
    template = owned_template(session, team_id, template_id)
    build = template_store.get_build(session, template.id, build_id)
    if build is None:
        raise APIError(404, f"Build '{build_id}' of template '{template_id}' not found")
    return template, build


def _quota_error(status: int, message: str) -> APIError:
    return APIError(status, message, NO_RETRY)


def metered_upload(request: Request, team_id: str) -> AsyncIterator[bytes]:
    """The request body, cut with a 429 once the team's stored upload bytes would pass its quota."""
    services = request.app.state.services
    with services.db.session() as session:
        stored, limit = quotas.upload_budget(session, services.settings, team_id)
    return quotas.UPLOADS.metered(team_id, stored, limit, request.stream(), error=_quota_error)


# --- 1. request a build -------------------------------------------------------------------------

class BuildRequestV3(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str | None = Field(default=None, max_length=255)
    alias: str | None = Field(default=None, max_length=255)
    tags: limits.Tags | None = None
    cpu_count: int | None = Field(default=None, alias="cpuCount")
    memory_mb: int | None = Field(default=None, alias="memoryMB")
    min_free_disk_mb: int | None = Field(default=None, alias="minFreeDiskMb")


@router.post("/v3/templates", status_code=202, responses=openapi.errors(409))
async def request_build(body: BuildRequestV3, request: Request, team_id: TeamId) -> dict[str, Any]:
    settings = request.app.state.services.settings
    raw = body.name or body.alias
    if not raw:
        raise APIError(400, "name is required")
    name, tag = check_name(raw)
    tags = list(dict.fromkeys(([tag] if tag else []) + list(body.tags or [])))
    for extra in tags:
        if not TAG.match(extra):
            raise APIError(400, f"Invalid tag '{extra}'")
    cpu = body.cpu_count if body.cpu_count is not None else settings.default_cpu_count
    memory = body.memory_mb if body.memory_mb is not None else settings.default_memory_mb
    if not 1 <= cpu <= settings.max_cpu_count:
        raise APIError(400, f"cpuCount must be between 1 and {settings.max_cpu_count}")
    if not 128 <= memory <= settings.max_memory_mb:
        raise APIError(400, f"memoryMB must be between 128 and {settings.max_memory_mb}")
    with request.app.state.services.db.session() as session, session.begin():
        try:
            template, build = template_store.request_build(
                session, team_id=team_id, name=name, tags=tags, cpu_count=cpu, memory_mb=memory,
                disk_mb=settings.default_disk_mb, envd_version=ENVD_VERSION,
            )
        except template_store.NameTaken:
            raise APIError(409, f"Template name '{name}' is reserved for the server's built-in template") from None
        except template_store.ForeignNamespace:
            raise APIError(400, f"Template name '{name}' is in another team's namespace: use a bare name or "
                                f"'{template_store.team_slug(team_id)}/name'") from None
        names = template_store.names(session, template)
        return {"templateID": template.id, "buildID": build.id, "status": "waiting", "public": template.public,
                "names": names, "aliases": template_store.aliases(session, template.id), "tags": tags}


# --- 2. COPY files ------------------------------------------------------------------------------

@router.get("/templates/{template_id}/files/{files_hash}", status_code=201, responses=openapi.errors(400, 404))
async def file_upload_link(template_id: str, files_hash: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    if not FILES_HASH.match(files_hash):
        raise APIError(400, "files hash must be 64 lowercase hex characters (SHA-256)")
    with request.app.state.services.db.session() as session:
        template = owned_template(session, team_id, template_id)
    store = builder(request).uploads
    if store.present(team_id, files_hash):
        return {"present": True}
    token = store.token(team_id, template.id, files_hash)
    base = str(request.base_url).rstrip("/")
    return {"present": False, "url": f"{base}/templates/{quote(template.id, safe='')}/files/{files_hash}/upload?token={token}"}


@router.put("/templates/{template_id}/files/{files_hash}/upload", status_code=201, responses=openapi.errors(403, 404, 413, 429))
async def upload_files(template_id: str, files_hash: str, token: str, request: Request) -> Response:
    """Authenticated by the URL's token only: the SDK sends no API key here."""
    store = builder(request).uploads
    if not FILES_HASH.match(files_hash):
        raise APIError(400, "files hash must be 64 lowercase hex characters (SHA-256)")
    try:
        team_id = store.check(token, template_id, files_hash)
    except UploadError as exc:
        raise APIError(403, str(exc)) from None
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > store.max_bytes:
        raise APIError(413, f"the upload is larger than this server's limit of {store.max_bytes} bytes "
                            "(SANDLOT_UPLOAD_MAX_BYTES)")
    try:
        await store.receive(team_id, files_hash, metered_upload(request, team_id))
    except UploadTooLarge as exc:
        raise APIError(413, str(exc)) from None
    except UploadError as exc:
        raise APIError(400, str(exc)) from None
    return Response(status_code=201)


# --- 3. start -----------------------------------------------------------------------------------

class BuildStartV2(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    from_image: str | None = Field(default=None, alias="fromImage", max_length=1024)
    from_template: str | None = Field(default=None, alias="fromTemplate", max_length=limits.NAME)
    from_image_registry: limits.JsonObject | None = Field(default=None, alias="fromImageRegistry")
    force: bool = False
    steps: list[limits.JsonObject] = Field(default_factory=list, max_length=1000)
    start_cmd: str | None = Field(default=None, alias="startCmd", max_length=limits.COMMAND)
    ready_cmd: str | None = Field(default=None, alias="readyCmd", max_length=limits.COMMAND)


@router.post("/v2/templates/{template_id}/builds/{build_id}", status_code=202, responses=openapi.errors(404, 409, 429))
async def start_build(template_id: str, build_id: str, body: BuildStartV2, request: Request, team_id: TeamId) -> dict[str, Any]:
    if body.from_image and body.from_template:
        raise APIError(400, "Set either fromImage or fromTemplate, not both")
    if body.from_image_registry and body.from_image_registry.get("type") not in ("registry", "aws", "gcp"):
        raise APIError(400, "fromImageRegistry.type must be 'registry', 'aws' or 'gcp'")
    if body.from_image and body.from_image.split(":", 1)[0] not in BASE_IMAGES:
        try:  # the registry a tenant names: a docker:// reference, public unless the operator allowed it
            await asyncio.to_thread(builder(request).images.check, body.from_image)
        except PullError as exc:
            raise APIError(400, f"fromImage '{body.from_image[:200]}': {exc}") from None
    try:
        parsed = build_steps.parse(body.steps)
    except build_steps.StepError as exc:
        raise APIError(400, str(exc)) from None
    store = builder(request).uploads
    for step in parsed:
        if step.kind == "COPY" and step.files_hash and not store.present(team_id, step.files_hash):
            raise APIError(400, f"Step {step.number}: the files of COPY {step.args[0]} were not uploaded")
    with request.app.state.services.db.session() as session, session.begin():
        template, build = owned_build(session, team_id, template_id, build_id)
        if build.status != "waiting" or builder(request).running(build.id):
            raise APIError(400, f"Build '{build_id}' is {build.status}, not waiting; request a new build")
        quotas.reserve_build(session, request.app.state.services.settings, team_id, error=_quota_error)
        build.status = "building"
    builder(request).submit(build.id, BuildRequest(
        team_id=team_id, steps=parsed, from_image=body.from_image, from_template=body.from_template,
        registry=body.from_image_registry, force=body.force, start_cmd=body.start_cmd or None,
        ready_cmd=body.ready_cmd or None,
    ))
    return {}


# --- 4. status and logs -------------------------------------------------------------------------

def _entry(row: BuildLogEntry) -> dict[str, Any]:
    data = {"timestamp": _iso(row.timestamp), "level": row.level, "message": row.message}
    if row.step:
        data["step"] = row.step
    return data


def _line(row: BuildLogEntry) -> str:
    return f"[{_iso(row.timestamp)}] {row.message}"


@router.get("/templates/{template_id}/builds/{build_id}/status", responses=openapi.errors(404))
async def build_status(template_id: str, build_id: str, request: Request, team_id: TeamId, logsOffset: int = 0,
                       limit: int = MAX_LOG_PAGE, level: str | None = None) -> dict[str, Any]:
    limit = max(0, min(limit, MAX_LOG_PAGE))
    with request.app.state.services.db.session() as session:
        template, build = owned_build(session, team_id, template_id, build_id)
        rows = template_store.read_logs(session, build.id, offset=max(logsOffset, 0), limit=limit, level=level)
        data: dict[str, Any] = {"templateID": template.id, "buildID": build.id, "status": build.status,
                                "logs": [_line(r) for r in rows], "logEntries": [_entry(r) for r in rows]}
        if build.status == "error":
            tail = template_store.read_logs(session, build.id, offset=0, limit=20, backward=True)
            data["reason"] = {"message": build.reason or "Build failed", "step": build.reason_step or "base",
                              "logEntries": [_entry(r) for r in reversed(tail)]}
        return data


@router.get("/templates/{template_id}/builds/{build_id}/logs", responses=openapi.errors(404))
async def build_logs(template_id: str, build_id: str, request: Request, team_id: TeamId, cursor: int | None = None,
                     limit: int = MAX_LOG_PAGE, direction: str = "forward", level: str | None = None) -> JSONResponse:
    if direction not in ("forward", "backward"):
        raise APIError(400, "direction must be 'forward' or 'backward'")
    with request.app.state.services.db.session() as session:
        _template, build = owned_build(session, team_id, template_id, build_id)
        rows = template_store.read_logs(session, build.id, limit=max(0, min(limit, MAX_LOG_PAGE)), level=level,
                                        cursor_ms=cursor, backward=direction == "backward")
        return JSONResponse({"logs": [_entry(r) for r in rows]})


# --- legacy flows -------------------------------------------------------------------------------

@router.post("/v2/templates", status_code=202, responses=openapi.errors(409))
async def request_build_v2(body: BuildRequestV3, request: Request, team_id: TeamId) -> dict[str, Any]:
    """v2 create (``alias``): same as v3; the build is then started with ``POST /v2/.../builds/{id}``."""
    return await request_build(body, request, team_id)


class BuildRequestV1(BuildRequestV3):
    dockerfile: str = Field(min_length=1, max_length=200_000)
    start_cmd: str | None = Field(default=None, alias="startCmd", max_length=limits.COMMAND)
    ready_cmd: str | None = Field(default=None, alias="readyCmd", max_length=limits.COMMAND)


def dockerfile_steps(dockerfile: str) -> dict[str, Any]:
    """Dockerfile → ``TemplateBuildStartV2`` with the SDK's own parser (pinned e2b version).

    An inline Dockerfile has no build context, so COPY/ADD are refused."""
    from e2b import Template

    if not dockerfile.lstrip().upper().startswith(("FROM", "#", "ARG")):
        raise APIError(400, "dockerfile must be the Dockerfile's content (starting with FROM)")
    try:
        template = Template().from_dockerfile(dockerfile)
    except Exception as exc:  # the parser raises ValueError and friends
        raise APIError(400, f"Invalid Dockerfile: {exc}") from None
    inner = template._template  # private: the SDK has no public serializer
    if any(i.get("type") == "COPY" for i in inner._instructions):
        raise APIError(400, "COPY/ADD need a build context, which the v1 inline-Dockerfile flow does not have; "
                            "use Template.build (v3) instead")
    data: dict[str, Any] = dict(inner._serialize(inner._instructions))
    for step in data["steps"]:
        step["type"] = getattr(step["type"], "value", step["type"])  # the SDK's str enum
    return data


@router.post("/templates", status_code=202, responses=openapi.errors(404, 409, 429))
async def request_build_v1(body: BuildRequestV1, request: Request, team_id: TeamId) -> dict[str, Any]:
    """v1: an inline Dockerfile, built right away (there is no image push to wait for)."""
    start = dockerfile_steps(body.dockerfile)
    if body.start_cmd:
        start["startCmd"] = body.start_cmd
    if body.ready_cmd:
        start["readyCmd"] = body.ready_cmd
    created = await request_build(body, request, team_id)
    await start_build(created["templateID"], created["buildID"], BuildStartV2.model_validate(start), request, team_id)
    return {**created, "status": "building"}


@router.post("/templates/{template_id}/builds/{build_id}", status_code=202, responses=openapi.errors(404))
async def start_build_v1(template_id: str, build_id: str, request: Request, team_id: TeamId) -> Response:
    """v1 start: the build already runs since ``POST /templates``; accepted for old clients."""
    with request.app.state.services.db.session() as session:
        owned_build(session, team_id, template_id, build_id)
    return Response(status_code=202)
