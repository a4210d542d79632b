"""Bring a Prime sandbox from PENDING to RUNNING (or ERROR) in the background, on the shared engine."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog
from protobuf import Oneof
from sqlalchemy import select

from sandlot.api.prime.context import PrimeContext
from sandlot.api.prime.image_builds import sync
from sandlot.api.prime.image_refs import ImageChoice
from sandlot.protocol.gen.process import process_pb as ppb
from sandlot.orchestrator.errors import SandboxError
from sandlot.orchestrator.requests import CreateRequest
from sandlot.quotas import QuotaExceeded
from sandlot.store import templates as template_store
from sandlot.store.models import Build, PrimeImageBuild, PrimeSandbox, Sandbox, Template

log = structlog.get_logger("sandlot.prime")

START_LOG = "/var/log/sandlot-start-command.log"
"""Where the start command's output goes; ``GET /sandbox/{id}/logs`` reads it back."""
START_EXIT = "/var/log/sandlot-start-command.exit"
"""The start command's exit status once it ended: ``GET /sandbox/{id}``'s ``exitCode``."""
BUILD_POLL_S = 1.0


@dataclass
class Launch:
    sandbox_id: str
    team_id: str
    template_id: str | None
    build_id: str | None
    pending_build_id: str | None
    cpu_count: int
    memory_mb: int
    timeout_s: int
    disk_mb: int | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    start_command: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    volume_mounts: list[dict[str, str]] | None = None
    """Private copies of Prime volumes (``orchestrator/prime_volumes.py``), bound as E2B volumes."""


def _sized(build: Build, cpu_count: int, memory_mb: int, disk_mb: int | None) -> Build:
    """A detached copy of the build with the Prime request's CPU, memory and disk (never persisted)."""
    copy = Build(**{c.key: getattr(build, c.key) for c in Build.__table__.columns})
    copy.cpu_count, copy.memory_mb = cpu_count, memory_mb
    if disk_mb is not None:
        copy.disk_mb = disk_mb
    return copy


def _finish(ctx: PrimeContext, sandbox_id: str, **fields: object) -> PrimeSandbox | None:
    with ctx.services.db.session() as session, session.begin():
        row = session.get(PrimeSandbox, sandbox_id)
        if row is None:
            return None
        was = row.status
        if was not in ("PENDING", "RUNNING"):
            return row  # deleted meanwhile: keep TERMINATED
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = datetime.now(timezone.utc)
        return row


async def _wait_for_build(ctx: PrimeContext, build_id: str) -> ImageChoice:
    """The image once its build completes; ``RuntimeError`` with the build's reason if it fails."""
    while True:
        with ctx.services.db.session() as session, session.begin():
            build = session.get(PrimeImageBuild, build_id)
            if build is None or build.deleted:
                raise RuntimeError(f"image build {build_id} was deleted")
            sync(session, build)
            if build.status == "COMPLETED":
                return ImageChoice(build.template_id, build.sandlot_build_id, image_config=dict(build.image_config or {}))
            if build.status in ("FAILED", "CANCELLED"):
                raise RuntimeError(f"image build {build_id} {build.status.lower()}: {build.error_message or ''}".strip())
        await asyncio.sleep(BUILD_POLL_S)


async def launch(ctx: PrimeContext, job: Launch) -> None:
    template_id, build_id, start_command = job.template_id, job.build_id, job.start_command
    if job.pending_build_id is not None:
        try:
            image = await _wait_for_build(ctx, job.pending_build_id)
        except RuntimeError as exc:
            _finish(ctx, job.sandbox_id, status="ERROR", error_type="IMAGE_PULL_FAILED", error_message=str(exc))
            return
        template_id, build_id = image.template_id, image.build_id
        start_command = start_command or image.image_config.get("startCommand")
        _remember_image(ctx, job.sandbox_id, image.image_config)
    with ctx.services.db.session() as session:
        template = session.get(Template, template_id) if template_id else None
        build = session.get(Build, build_id) if build_id else None
        if template is not None and build is None:
            build = template_store.latest_ready_build(session, template.id)
        names = template_store.aliases(session, template.id) if template is not None else []
        alias = names[0] if names else None
        if build is not None:
            session.expunge(build)
        if template is not None:
            session.expunge(template)
    if template is None or build is None or build.status != "ready":
        _finish(ctx, job.sandbox_id, status="ERROR", error_type="IMAGE_PULL_FAILED",
                error_message=f"template {template_id} has no finished build")
        return
    try:
        row = await ctx.services.sandboxes.create(
            CreateRequest(
                team_id=job.team_id,
                template=template,
                build=_sized(build, job.cpu_count, job.memory_mb, job.disk_mb),
                alias=alias,
                timeout_s=job.timeout_s,
                metadata=job.metadata,
                env_vars=job.env_vars,
                network=job.network,
                sandbox_id=job.sandbox_id,
                volume_mounts=job.volume_mounts,
            )
        )
    except (SandboxError, QuotaExceeded) as exc:
        _finish(ctx, job.sandbox_id, status="ERROR", error_message=exc.message)
        return
    except Exception as exc:  # the engine already cleaned up; report instead of hanging PENDING
        _finish(ctx, job.sandbox_id, status="ERROR", error_message=f"Failed to start sandbox: {exc}")
        return
    prime = _finish(ctx, job.sandbox_id, status="RUNNING", started_at=row.started_at)
    if prime is None or prime.status != "RUNNING":
        await ctx.services.sandboxes.kill(job.team_id, job.sandbox_id)
        return
    if start_command:
        await run_start_command(ctx, job.sandbox_id, start_command)


def _remember_image(ctx: PrimeContext, sandbox_id: str, image_config: dict[str, Any]) -> None:
    """The image's USER/WORKDIR become the gateway defaults for this sandbox."""
    with ctx.services.db.session() as session, session.begin():
        row = session.get(PrimeSandbox, sandbox_id)
        if row is not None:
            row.spec = {**(row.spec or {}), "defaultUser": image_config.get("user"), "defaultWorkdir": image_config.get("workdir")}
            row.pending_image_build_id = None


async def run_start_command(ctx: PrimeContext, sandbox_id: str, command: dict[str, Any]) -> None:
    """Run the image's start command as root, detached, its output appended to ``START_LOG``."""
    route = ctx.services.sandboxes.route(sandbox_id)
    if route is None:
        return
    argv = [command["executable"], *command.get("args", [])]
    # its exit status lands in START_EXIT (the Prime ``exitCode``); a stale one (a checkpoint's) goes first
    script = (f"rm -f {START_EXIT}; {' '.join(shlex.quote(a) for a in argv)} >>{START_LOG} 2>&1 </dev/null; "
              f"echo $? >{START_EXIT}")
    request = ppb.StartRequest(
        process=ppb.ProcessConfig(cmd="/bin/sh", args=["-c", script], envs={}, cwd="/"),
        tag="prime-start-command",
        stdin=False,
    )
    client = ctx.envd.processes(route)
    stream = client.start(request, headers=ctx.envd.headers(route, "root"))
    try:
        async for response in stream:
            event = response.event.event if response.event is not None else None
            if isinstance(event, Oneof) and event.field in ("start", "end"):
                break
    except Exception:
        log.exception("start command failed to launch", sandbox_id=sandbox_id)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def fail_orphans(ctx: PrimeContext) -> None:
    """At start-up: PENDING sandboxes whose launch died with the previous server process end as ERROR."""
    with ctx.services.db.session() as session, session.begin():
        for row in session.scalars(select(PrimeSandbox).where(PrimeSandbox.status == "PENDING")):
            box = session.get(Sandbox, row.id)
            if box is None or box.state not in ("running", "paused"):
                row.status, row.error_message = "ERROR", "The server restarted before this sandbox started; create it again"
                row.updated_at = datetime.now(timezone.utc)
