"""Prime checkpoints (``/sandbox/{id}/checkpoints``, ``/sandbox/checkpoints/…``) on the engine's snapshots.

A Prime checkpoint is a filesystem checkpoint: the engine's snapshot taken with
``memory=False`` (a copy of the sandbox's disk; the sandbox keeps running). It is complete
when the POST answers, so it is ``DURABLE`` at once and ``wait_for_checkpoint`` returns on
its first poll. A sandbox created from it boots on a copy of that disk with the
checkpoint's sizes, network policy and start command (which runs again: processes are not
part of a filesystem checkpoint). Snapshots taken through the E2B API are checkpoints of
their sandbox too (one engine, two façades); one with memory restores its processes.

Lineage (``parent_id``, ``depth``) lives in the ``spec`` of the Prime sandbox restored
from a checkpoint, so checkpoints of checkpoints chain without a schema change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from sandlot.api import limits, openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime import records, volumes
from sandlot.api.prime.context import PrimeContext, prime
from sandlot.api.prime.errors import PrimeError, not_found, parse_body
from sandlot.api.prime.launcher import run_start_command
from sandlot.api.prime.shapes import iso
from sandlot.orchestrator.requests import CloneRequest
from sandlot.store.models import PrimeSandbox, Snapshot

router = APIRouter(prefix="/api/v1")

CheckpointIds = Annotated[list[limits.ShortId], Field(min_length=1, max_length=100)]


class CheckpointBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checkpoint_ids: CheckpointIds


def _find(session: Session, team_id: str, checkpoint_id: str) -> Snapshot | None:
    """By id only (E2B snapshot names are not checkpoint ids); another team's is a missing one."""
    snap = session.get(Snapshot, checkpoint_id)
    return snap if snap is not None and snap.team_id == team_id else None


def _lineage(session: Session, snap: Snapshot) -> tuple[str | None, int]:
    """(parent checkpoint, depth): the checkpoint the snapshotted sandbox was restored from."""
    source = session.get(PrimeSandbox, snap.source_sandbox_id)
    spec = (source.spec or {}) if source is not None else {}
    parent = spec.get("checkpointId")
    return (parent, int(spec.get("checkpointDepth", 0)) + 1) if parent else (None, 0)


def checkpoint_json(session: Session, snap: Snapshot) -> dict[str, Any]:
    created = iso(snap.created_at)
    source = session.get(PrimeSandbox, snap.source_sandbox_id)
    parent, depth = _lineage(session, snap)
    return {
        "id": snap.id,
        "sandbox_id": snap.source_sandbox_id,
        "parent_id": parent,
        "team_id": snap.team_id,
        "state": "DURABLE",
        "depth": depth,
        "docker_image": source.docker_image if source is not None else (snap.alias or snap.template_id),
        "disk_size_bytes": snap.disk_mb * 1024 * 1024,
        "stored_bytes": None,
        "occupied_bytes": 0,
        "error": None,
        "created_at": created,
        "updated_at": created,
    }


def _owned_sandbox(session: Session, team_id: str, sandbox_id: str) -> records.View:
    v = records.get(session, team_id, sandbox_id)
    if v is None:
        raise not_found("Sandbox", sandbox_id)
    return v


@router.post("/sandbox/checkpoints:batchGet", openapi_extra=openapi.body(CheckpointBatchBody))
async def batch_get(request: Request, team_id: TeamId) -> dict[str, Any]:
    body = await parse_body(request, CheckpointBatchBody)
    ctx = prime(request)
    found, errors = [], []
    with ctx.services.db.session() as session:
        for checkpoint_id in dict.fromkeys(body.checkpoint_ids):
            snap = _find(session, team_id, checkpoint_id)
            version = volumes.store(ctx).version(team_id, checkpoint_id) if snap is None else None
            if version is not None:   # a volume's published head (a publish's checkpoint)
                found.append(volumes.version_json(volumes.store(ctx), version))
            elif snap is None:
                errors.append({"checkpoint_id": checkpoint_id, "code": "NOT_FOUND",
                               "message": f"Checkpoint {checkpoint_id} not found"})
            else:
                found.append(checkpoint_json(session, snap))
    return {"checkpoints": found, "errors": errors}


@router.get("/sandbox/checkpoints/{checkpoint_id}", responses=openapi.prime_errors(404))
async def get_checkpoint(checkpoint_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    ctx = prime(request)
    with ctx.services.db.session() as session:
        snap = _find(session, team_id, checkpoint_id)
        if snap is None:
            version = volumes.store(ctx).version(team_id, checkpoint_id)
            if version is None:
                raise not_found("Checkpoint", checkpoint_id)
            return volumes.version_json(volumes.store(ctx), version)
        return checkpoint_json(session, snap)


@router.delete("/sandbox/checkpoints/{checkpoint_id}", status_code=204, responses=openapi.prime_errors(404))
async def delete_checkpoint(checkpoint_id: str, request: Request, team_id: TeamId) -> Response:
    """Sandboxes restored from it keep running: each has its own copy of the disk."""
    ctx = prime(request)
    with ctx.services.db.session() as session:
        if _find(session, team_id, checkpoint_id) is None:
            raise not_found("Checkpoint", checkpoint_id)
    if not await ctx.services.sandboxes.snapshots.delete(team_id, checkpoint_id):
        raise not_found("Checkpoint", checkpoint_id)
    return Response(status_code=204)


def _of_sandbox(session: Session, team_id: str, sandbox_id: str) -> list[Snapshot]:
    stmt = (select(Snapshot).where(Snapshot.team_id == team_id, Snapshot.source_sandbox_id == sandbox_id)
            .order_by(Snapshot.created_at.asc(), Snapshot.id.asc()))
    return list(session.scalars(stmt))


@router.get("/sandbox/{sandbox_id}/checkpoints", responses=openapi.prime_errors(404))
async def list_checkpoints(sandbox_id: str, request: Request, team_id: TeamId,
                           checkpoint_id: str | None = None) -> dict[str, Any]:
    """Oldest first; also after the sandbox is gone (its checkpoints outlive it)."""
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        snaps = _of_sandbox(session, team_id, sandbox_id)
        if not snaps:
            _owned_sandbox(session, team_id, sandbox_id)
        return {"checkpoints": [checkpoint_json(session, s) for s in snaps
                                if checkpoint_id is None or s.id == checkpoint_id]}


@router.post("/sandbox/{sandbox_id}/checkpoints", status_code=201, responses=openapi.prime_errors(404, 409, 429, 507))
async def create_checkpoint(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    """Only a running sandbox (409 otherwise); the team's snapshot quota applies (429)."""
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        v = _owned_sandbox(session, team_id, sandbox_id)
        if v.status != "RUNNING":
            raise PrimeError(409, f"Sandbox {sandbox_id} is {v.status}: only running sandboxes can be checkpointed")
        if v.box is not None and v.box.volume_mounts:   # a restore would share the sandbox's private copy
            raise PrimeError(400, f"Sandbox {sandbox_id} has volumes attached: publish them instead of checkpointing")
    snap = await ctx.services.sandboxes.snapshot(team_id, sandbox_id, None, memory=False)
    with ctx.services.db.session() as session:
        fresh = session.get(Snapshot, snap.id)
        if fresh is None:
            raise not_found("Checkpoint", snap.id)
        return checkpoint_json(session, fresh)


@router.delete("/sandbox/{sandbox_id}/checkpoints", responses=openapi.prime_errors(404))
async def delete_all(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        ids = [s.id for s in _of_sandbox(session, team_id, sandbox_id)]
        if not ids:
            _owned_sandbox(session, team_id, sandbox_id)
    deleted: list[str] = []
    errors: list[dict[str, str]] = []
    for checkpoint_id in ids:
        if await ctx.services.sandboxes.snapshots.delete(team_id, checkpoint_id):
            deleted.append(checkpoint_id)
        else:   # deleted meanwhile by another call
            errors.append({"checkpoint_id": checkpoint_id, "code": "NOT_FOUND",
                           "message": f"Checkpoint {checkpoint_id} not found"})
    return {"deleted": deleted, "errors": errors}


# --- create from a checkpoint ---------------------------------------------------------------


@dataclass
class Restore:
    """A ``POST /sandbox`` with ``checkpoint_id``: what the request may set on the new sandbox."""

    team_id: str
    checkpoint_id: str
    name: str
    timeout_minutes: int
    timeout_s: int
    labels: list[str]
    idempotency_key: str | None
    env_vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    network: dict[str, Any] | None = None
    allowlist: list[str] | None = None
    denylist: list[str] | None = None


async def restore(ctx: PrimeContext, job: Restore) -> str:
    """Start a sandbox from the checkpoint and record it as a RUNNING Prime sandbox; its id.

    Synchronous (the restore is a disk copy and a boot): the engine picks the new id, and the
    Prime row is written once the sandbox runs. Sizes are the checkpoint's."""
    with ctx.services.db.session() as session:
        snap = _find(session, job.team_id, job.checkpoint_id)
        if snap is None:
            raise not_found("Checkpoint", job.checkpoint_id)
        source = session.get(PrimeSandbox, snap.source_sandbox_id)
        source_spec = dict(source.spec or {}) if source is not None else {}
        docker_image = source.docker_image if source is not None else (snap.alias or snap.template_id)
        _, depth = _lineage(session, snap)
        session.expunge(snap)
    row = await ctx.services.sandboxes.start_from(snap, CloneRequest(
        team_id=job.team_id, timeout_s=job.timeout_s, metadata={"prime.name": job.name},
        env_vars={**job.env_vars, **job.secrets}, network=job.network))
    now = datetime.now(timezone.utc)
    spec = {
        **source_spec,
        "cpuCores": source_spec.get("cpuCores", float(snap.cpu_count)),
        "memoryGB": source_spec.get("memoryGB", snap.memory_mb / 1024),
        "diskSizeGB": source_spec.get("diskSizeGB", snap.disk_mb / 1024),
        "environmentVars": {**(source_spec.get("environmentVars") or {}), **job.env_vars},
        "checkpointId": snap.id,
        "checkpointDepth": depth,
        "egressGeneration": 1,
    }
    if job.network is not None:
        spec["networkAllowlist"], spec["networkDenylist"] = job.allowlist, job.denylist
    with ctx.services.db.session() as session, session.begin():
        session.add(PrimeSandbox(
            id=row.id, team_id=job.team_id, name=job.name, docker_image=docker_image, spec=spec,
            labels=job.labels, timeout_minutes=job.timeout_minutes, idempotency_key=job.idempotency_key,
            status="RUNNING", created_at=now, updated_at=now, started_at=row.started_at,
        ))
    command = spec.get("startCommand")
    if command and not snap.memory:   # a memory snapshot brings its start command's process back
        ctx.spawn(run_start_command(ctx, row.id, command), f"start command {row.id}")
    return row.id
