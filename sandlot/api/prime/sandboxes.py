"""Prime ``/api/v1/sandbox`` routes: create/list/get/delete, bulk delete, batch status, logs, auth."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any


from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import JSONResponse

from sandlot import ids
from sandlot.api import limits, openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime import checkpoints, egress, image_builds, image_refs, records, volumes
from sandlot.api.prime.context import PrimeContext, prime
from sandlot.api.prime.errors import PrimeError, not_found, parse_body
from sandlot.api.prime.launcher import START_EXIT, START_LOG, Launch, launch
from sandlot.api.prime.shapes import iso, sandbox_json, status_json
from sandlot.quotas import reserve_sandbox
from sandlot.store.models import PrimeSandbox

router = APIRouter(prefix="/api/v1")

MAX_LOG_BYTES = 4 << 20
"""``GET /sandbox/{id}/logs`` answers at most the first 4 MiB of the start command's output."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class StartCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    executable: str = Field(min_length=1, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=1024)

    @field_validator("args")
    @classmethod
    def _args_size(cls, args: list[str]) -> list[str]:
        if sum(len(a.encode()) for a in args) > limits.COMMAND * 4:
            raise ValueError(f"start_command.args take more than {limits.COMMAND * 4} bytes")
        return args


class CreateBody(_Body):
    name: str = Field(min_length=1, max_length=100)
    docker_image: str | None = Field(None, min_length=1, max_length=1024)
    checkpoint_id: str | None = Field(None, max_length=limits.NAME)
    start_command: StartCommand | None = None
    cpu_cores: float = Field(1.0, gt=0, le=16)
    memory_gb: float = Field(1.0, gt=0, le=64)
    disk_size_gb: float = Field(5.0, gt=0, le=1000)
    gpu_count: int = Field(0, ge=0)
    timeout_minutes: int = Field(60, ge=1, le=1440)
    environment_vars: limits.EnvVars | None = None
    secrets: limits.EnvVars | None = None
    labels: limits.Labels = Field(default_factory=list)
    network_allowlist: limits.NetworkList | None = None
    network_denylist: limits.NetworkList | None = None
    region: str | None = Field(None, max_length=64)
    volumes: limits.JsonObjects | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=128)


BulkIds = Annotated[list[limits.ShortId], Field(max_length=500)]
BulkLabels = Annotated[list[limits.Label], Field(max_length=50)]
BatchIds = Annotated[list[limits.ShortId], Field(max_length=100)]


class BulkDeleteBody(_Body):
    sandbox_ids: BulkIds | None = None
    labels: BulkLabels | None = None


class BatchStatusBody(_Body):
    sandbox_ids: BatchIds


def _auth_json(ctx: PrimeContext, request: Request, sandbox_id: str, team_id: str) -> dict[str, Any]:
    token, expires_at = ctx.signer.issue(sandbox_id, team_id)
    return {
        "token": token,
        "gateway_url": str(request.base_url).rstrip("/") + "/gateway",
        "user_ns": team_id,
        "job_id": sandbox_id,
        "expires_at": iso(datetime.fromtimestamp(expires_at, timezone.utc)),
    }


def _network(body: CreateBody) -> dict[str, Any] | None:
    """Prime lists → the engine's E2B-shaped egress rules (an allowlist denies everything else)."""
    return egress.stored(body.network_allowlist, body.network_denylist)


def _check_supported(body: CreateBody) -> None:
    if body.checkpoint_id and body.docker_image:
        raise PrimeError(422, "omit docker_image and disk_size_gb when restoring a checkpoint")
    if not body.checkpoint_id and not body.docker_image:
        raise PrimeError(422, "docker_image is required unless checkpoint_id is set")
    if body.gpu_count:
        raise PrimeError(400, "GPU sandboxes are not available on this Sandlot server")
    if body.volumes and body.checkpoint_id:
        raise PrimeError(400, "volumes cannot be mounted into a sandbox restored from a checkpoint")


@router.post("/sandbox", status_code=201, responses=openapi.prime_errors(400, 404, 409, 429),
             openapi_extra=openapi.body(CreateBody))
async def create_sandbox(request: Request, team_id: TeamId) -> JSONResponse:
    body = await parse_body(request, CreateBody)
    _check_supported(body)
    ctx = prime(request)
    settings = ctx.services.settings
    cpu_count = max(1, math.ceil(body.cpu_cores))
    memory_mb = max(64, int(body.memory_gb * 1024))
    if cpu_count > settings.max_cpu_count or memory_mb > settings.max_memory_mb:
        raise PrimeError(
            400, f"This server allows at most {settings.max_cpu_count} CPU cores and {settings.max_memory_mb // 1024} GB of memory"
        )
    network = _network(body)
    if network is not None:
        ctx.services.sandboxes.egress_policy(None, network)   # InvalidRequest: Prime's 422 (api/errors.py)
    timeout_s = min(body.timeout_minutes * 60, settings.max_lifetime_s)
    if body.checkpoint_id:
        return await _restore(ctx, request, team_id, body, network, timeout_s)
    now = datetime.now(timezone.utc)
    with ctx.services.db.session() as session, session.begin():
        if body.idempotency_key:
            existing = records.by_idempotency_key(session, team_id, body.idempotency_key)
            if existing is not None:
                v = records.view(session, existing.id, prime=existing)
                assert v is not None
                return JSONResponse({**sandbox_json(v), "gatewayAuth": _auth_json(ctx, request, v.id, team_id)}, 201)
        choice = image_refs.resolve(session, team_id, body.docker_image or "")
    wanted = volumes.store(ctx).resolve(team_id, body.volumes) if body.volumes else []
    if choice.registry_pull:
        choice.pending_build_id = await image_builds.pull_on_first_use(ctx, team_id, body.docker_image or "")
    start_command = body.start_command.model_dump() if body.start_command else choice.image_config.get("startCommand")
    row = PrimeSandbox(
        id=ids.new_sandbox_id(),
        team_id=team_id,
        name=body.name,
        docker_image=body.docker_image or "",
        spec={
            "cpuCores": body.cpu_cores,
            "memoryGB": body.memory_gb,
            "diskSizeGB": body.disk_size_gb,
            "startCommand": start_command,
            "environmentVars": body.environment_vars or {},
            "networkAllowlist": body.network_allowlist,
            "networkDenylist": body.network_denylist,
            "region": body.region,
            "defaultUser": choice.image_config.get("user"),
            "defaultWorkdir": choice.image_config.get("workdir"),
        },
        labels=body.labels,
        timeout_minutes=body.timeout_minutes,
        idempotency_key=body.idempotency_key,
        status="PENDING",
        pending_image_build_id=choice.pending_build_id,
        created_at=now,
        updated_at=now,
    )
    with ctx.services.db.session() as session, session.begin():
        # 429 when the team runs its limit; this PENDING row holds the slot until its sandbox exists
        reserve_sandbox(session, settings, team_id, error=PrimeError)
        session.add(row)
        session.flush()
        v = records.view(session, row.id, prime=row)
        assert v is not None
        response = {**sandbox_json(v), "gatewayAuth": _auth_json(ctx, request, row.id, team_id)}
    # each sandbox works on its own copy of each volume's head (orchestrator/prime_volumes.py)
    try:
        mounts = await volumes.store(ctx).make_copies(team_id, row.id, wanted) if wanted else None
    except Exception:
        with ctx.services.db.session() as session, session.begin():
            failed = session.get(PrimeSandbox, row.id)
            if failed is not None:   # frees the slot the PENDING row held
                failed.status, failed.error_message = "ERROR", "Failed to copy a volume"
        raise
    job = Launch(
        sandbox_id=row.id,
        team_id=team_id,
        template_id=choice.template_id,
        build_id=choice.build_id,
        pending_build_id=choice.pending_build_id,
        cpu_count=cpu_count,
        memory_mb=memory_mb,
        disk_mb=max(64, int(body.disk_size_gb * 1024)),
        timeout_s=timeout_s,
        env_vars={**(body.environment_vars or {}), **(body.secrets or {})},
        metadata={"prime.name": body.name},
        start_command=start_command,
        network=network,
        volume_mounts=mounts,
    )
    ctx.spawn(launch(ctx, job), f"launch {row.id}")
    return JSONResponse(response, 201)


async def _restore(ctx: PrimeContext, request: Request, team_id: str, body: CreateBody,
                   network: dict[str, Any] | None, timeout_s: int) -> JSONResponse:
    """``checkpoint_id``: a RUNNING sandbox at once (checkpoints.restore), the same answer as a create."""
    assert body.checkpoint_id is not None
    if body.idempotency_key:
        with ctx.services.db.session() as session, session.begin():
            existing = records.by_idempotency_key(session, team_id, body.idempotency_key)
            if existing is not None:
                v = records.view(session, existing.id, prime=existing)
                assert v is not None
                return JSONResponse({**sandbox_json(v), "gatewayAuth": _auth_json(ctx, request, v.id, team_id)}, 201)
    sandbox_id = await checkpoints.restore(ctx, checkpoints.Restore(
        team_id=team_id, checkpoint_id=body.checkpoint_id, name=body.name, timeout_minutes=body.timeout_minutes,
        timeout_s=timeout_s, labels=body.labels, idempotency_key=body.idempotency_key,
        env_vars=body.environment_vars or {}, secrets=body.secrets or {}, network=network,
        allowlist=body.network_allowlist, denylist=body.network_denylist))
    with ctx.services.db.session() as session, session.begin():
        v = records.get(session, team_id, sandbox_id)
        if v is None:
            raise PrimeError(409, f"Sandbox {sandbox_id} ended while it was restored from checkpoint {body.checkpoint_id}")
        return JSONResponse({**sandbox_json(v), "gatewayAuth": _auth_json(ctx, request, sandbox_id, team_id)}, 201)


@router.get("/sandbox")
async def list_sandboxes(
    request: Request,
    team_id: TeamId,
    status: str | None = None,
    labels: list[str] = Query(default_factory=list),
    is_active: bool | None = None,
    page: int = Query(1, ge=1),
    per_page: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        views = records.all_for_team(session, team_id)
        items = [
            v
            for v in views
            if (status is None or v.status == status.upper())
            and (not is_active or v.status not in records.TERMINAL)
            and set(labels) <= set(v.prime.labels if v.prime is not None else [])
        ]
        start = (page - 1) * per_page
        chosen = [sandbox_json(v) for v in items[start : start + per_page]]
    return {"sandboxes": chosen, "total": len(items), "page": page, "per_page": per_page, "has_next": start + per_page < len(items)}


@router.post("/sandbox/status:batchGet", openapi_extra=openapi.body(BatchStatusBody))
async def batch_status(request: Request, team_id: TeamId) -> dict[str, Any]:
    body = await parse_body(request, BatchStatusBody)
    ctx = prime(request)
    statuses, errors = [], []
    with ctx.services.db.session() as session, session.begin():
        for sandbox_id in body.sandbox_ids:
            v = records.get(session, team_id, sandbox_id)
            if v is None:
                errors.append({"sandbox_id": sandbox_id, "code": "NOT_FOUND", "message": f"Sandbox {sandbox_id} not found"})
            else:
                statuses.append(status_json(v))
    return {"statuses": statuses, "errors": errors}


def _require(request: Request, team_id: str, sandbox_id: str) -> dict[str, Any]:
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        v = records.get(session, team_id, sandbox_id)
        if v is None:
            raise not_found("Sandbox", sandbox_id)
        return sandbox_json(v)


async def _read_exit_code(ctx: PrimeContext, sandbox_id: str) -> int | None:
    """The start command's exit status once it ended (``START_EXIT`` in the sandbox), else ``None``.

    The file is the tenant's to write: only a short decimal number is believed."""
    route = ctx.services.sandboxes.route(sandbox_id)
    if route is None:
        return None
    raw = await ctx.envd.read_file(route, START_EXIT, 16, timeout_s=5.0)
    text = raw.decode("ascii", "replace").strip() if raw is not None and len(raw) < 16 else ""
    return int(text) if text.isdigit() and len(text) <= 3 else None


@router.get("/sandbox/{sandbox_id}", responses=openapi.prime_errors(404))
async def get_sandbox(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    data = _require(request, team_id, sandbox_id)
    if data["status"] == "RUNNING" and data["startCommand"] is not None:
        data["exitCode"] = await _read_exit_code(prime(request), sandbox_id)
    return data


async def _delete(ctx: PrimeContext, team_id: str, sandbox_id: str) -> bool:
    """Kill the sandbox (if it runs) and remember it as TERMINATED; False when unknown."""
    with ctx.services.db.session() as session, session.begin():
        v = records.get(session, team_id, sandbox_id)
        if v is None:
            return False
        if v.prime is not None and v.prime.status not in records.TERMINAL:
            now = datetime.now(timezone.utc)
            v.prime.status, v.prime.terminated_at, v.prime.updated_at = "TERMINATED", now, now
            v.prime.error_type = v.prime.error_message = None
    await ctx.services.sandboxes.kill(team_id, sandbox_id)
    return True


@router.delete("/sandbox/{sandbox_id}", responses=openapi.prime_errors(404))
async def delete_sandbox(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    if not await _delete(prime(request), team_id, sandbox_id):
        raise not_found("Sandbox", sandbox_id)
    return {"success": True, "message": f"Sandbox {sandbox_id} deleted"}


@router.delete("/sandbox", openapi_extra=openapi.body(BulkDeleteBody))
async def bulk_delete(request: Request, team_id: TeamId) -> dict[str, Any]:
    body = await parse_body(request, BulkDeleteBody)
    if not body.sandbox_ids and not body.labels:
        raise PrimeError(422, "Provide sandbox_ids or labels")
    if body.sandbox_ids and body.labels:
        raise PrimeError(422, "Provide either sandbox_ids or labels, not both")
    ctx = prime(request)
    targets = list(body.sandbox_ids or [])
    if body.labels:
        with ctx.services.db.session() as session, session.begin():
            targets = [
                v.id
                for v in records.all_for_team(session, team_id)
                if v.prime is not None and v.status not in records.TERMINAL and set(body.labels) <= set(v.prime.labels)
            ]
    succeeded: list[str] = []
    failed: list[dict[str, str]] = []
    for sandbox_id in targets:
        try:
            if await _delete(ctx, team_id, sandbox_id):
                succeeded.append(sandbox_id)
            else:
                failed.append({sandbox_id: "Sandbox not found"})
        except Exception as exc:  # one failure must not stop the rest of the batch
            failed.append({sandbox_id: str(exc)})
    return {"succeeded": succeeded, "failed": failed, "message": f"Deleted {len(succeeded)} sandbox(es), {len(failed)} failed"}


@router.get("/sandbox/{sandbox_id}/error-context", responses=openapi.prime_errors(404))
async def error_context(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    data = _require(request, team_id, sandbox_id)
    return {"status": data["status"], "errorType": data["errorType"], "errorMessage": data["errorMessage"]}


@router.get("/sandbox/{sandbox_id}/logs", responses=openapi.prime_errors(404))
async def logs(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    """The start command's output (empty when the sandbox has none or is gone)."""
    data = _require(request, team_id, sandbox_id)
    ctx = prime(request)
    route = ctx.services.sandboxes.route(sandbox_id)
    if data["startCommand"] is None or route is None:
        return {"logs": ""}
    raw = await ctx.envd.read_file(route, START_LOG, MAX_LOG_BYTES)   # bounded: the tenant shapes this file
    return {"logs": raw.decode("utf-8", "replace") if raw is not None else ""}


@router.post("/sandbox/{sandbox_id}/auth", responses=openapi.prime_errors(404, 410))
async def gateway_auth(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    data = _require(request, team_id, sandbox_id)
    if data["status"] in records.TERMINAL:
        raise PrimeError(410, f"Sandbox {sandbox_id} is {data['status']}")
    return _auth_json(prime(request), request, sandbox_id, team_id)

