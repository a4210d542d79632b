"""Prime volumes (``/sandbox/volumes``, ``/sandbox/{id}/volumes/{name}/publish``) as ``prime-sandboxes`` calls them.

Names per team; a sandbox created with ``volumes`` works on a private copy of each volume's
head and ``publish`` makes its copy the new head (``orchestrator/prime_volumes.py``). The
publish answers a checkpoint (the new head version), ``DURABLE`` at once: the client's
``wait_for_checkpoint`` finds it through ``checkpoints:batchGet`` (``checkpoints.py``).
``team_id`` in queries and bodies is the caller's own team or absent (API keys are per team).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime.context import PrimeContext, prime
from sandlot.api.prime.errors import PrimeError, parse_body
from sandlot.api.prime.shapes import iso
from sandlot.orchestrator.prime_volumes import PrimeVolumes, ReadOnlyMount
from sandlot.store.models import Volume

router = APIRouter(prefix="/api/v1")


class CreateVolumeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=128)
    team_id: str | None = Field(None, max_length=64)


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    force: bool = False


def store(ctx: PrimeContext) -> PrimeVolumes:
    if ctx.volumes is None:
        ctx.volumes = PrimeVolumes(ctx.services.sandboxes.volumes)
    return ctx.volumes


def _check_team(team_id: str, asked: str | None) -> None:
    """Another team's scope is a scope this key cannot see: as if its volumes did not exist."""
    if asked and asked != team_id:
        raise PrimeError(404, f"Team {asked} not found")


def volume_json(volumes: PrimeVolumes, row: Volume, *, detail: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id, "name": row.name, "user_id": None, "team_id": row.team_id,
        "head_checkpoint_id": row.head_id, "created_at": iso(row.created_at),
        "occupied_bytes": volumes.occupied(row),
        "account_storage_used_bytes": None, "account_storage_limit_gb": None,
    }
    if detail:
        data["account_storage_used_bytes"] = sum(volumes.occupied(v) for v in volumes.list(row.team_id))
    return data


@router.post("/sandbox/volumes", status_code=201, responses=openapi.prime_errors(404, 409, 422),
             openapi_extra=openapi.body(CreateVolumeBody))
async def create_volume(request: Request, team_id: TeamId) -> dict[str, Any]:
    body = await parse_body(request, CreateVolumeBody)
    _check_team(team_id, body.team_id)
    volumes = store(prime(request))
    return volume_json(volumes, volumes.create(team_id, body.name), detail=True)


@router.get("/sandbox/volumes", responses=openapi.prime_errors(404))
async def list_volumes(request: Request, team_id: TeamId, page: int = 1,
                       per_page: int = 50) -> dict[str, Any]:
    _check_team(team_id, request.query_params.get("team_id"))
    page, per_page = max(1, page), min(max(1, per_page), 100)
    volumes = store(prime(request))
    await volumes.reap()
    rows = volumes.list(team_id)
    chunk = rows[(page - 1) * per_page: page * per_page]
    return {
        "volumes": [volume_json(volumes, v, detail=False) for v in chunk],
        "total": len(rows), "page": page, "per_page": per_page, "has_next": page * per_page < len(rows),
        "storage_used_bytes": sum(volumes.occupied(v) for v in rows), "storage_limit_gb": None,
    }


@router.get("/sandbox/volumes/{name}", responses=openapi.prime_errors(404))
async def get_volume(name: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    _check_team(team_id, request.query_params.get("team_id"))
    volumes = store(prime(request))
    return volume_json(volumes, volumes.get(team_id, name), detail=True)


@router.delete("/sandbox/volumes/{name}", status_code=204, responses=openapi.prime_errors(404))
async def delete_volume(name: str, request: Request, team_id: TeamId) -> Response:
    _check_team(team_id, request.query_params.get("team_id"))
    await store(prime(request)).delete(team_id, name)
    return Response(status_code=204)


@router.post("/sandbox/{sandbox_id}/volumes/{name}/publish", responses=openapi.prime_errors(400, 404, 409),
             openapi_extra=openapi.body(PublishBody))
async def publish(sandbox_id: str, name: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    body = await parse_body(request, PublishBody)
    volumes = store(prime(request))
    try:
        version = await volumes.publish(team_id, sandbox_id, name, body.force)
    except ReadOnlyMount as exc:
        raise PrimeError(400, exc.message) from exc
    return version_json(volumes, version)


def version_json(volumes: PrimeVolumes, version: Volume) -> dict[str, Any]:
    """A published version as the ``SandboxCheckpoint`` the client waits for."""
    created = iso(version.created_at)
    size = version.size_mb * 1024 * 1024
    occupied = volumes.occupied(Volume(head_id=version.id))
    return {
        "id": version.id, "sandbox_id": version.sandbox_id or "", "parent_id": None, "team_id": version.team_id,
        "state": "DURABLE", "depth": 0, "docker_image": "", "disk_size_bytes": size, "stored_bytes": occupied,
        "occupied_bytes": occupied, "error": None, "created_at": created, "updated_at": created,
    }
