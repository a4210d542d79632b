"""``POST /sandbox/background-jobs/status:batchGet``: completion of the SDK's background jobs, many at once.

The SDK's ``start_background_job`` leaves ``/tmp/job_<id>.exit`` (the exit status, once
done) and ``/tmp/job_<id>.launch/pid`` in the sandbox. One shell per sandbox checks all of
its jobs with the SDK's own rule (an exit file with content is the end; a live PID whose
cmdline names the exit file is a running job; neither is a job that died without one).
The job ids are 8 hex digits (422 otherwise), so nothing a tenant wrote reaches the script;
what the sandbox prints back is parsed as small numbers and never trusted further.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from protobuf import Oneof
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from sandlot.api import limits, openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime import records
from sandlot.api.prime.context import PrimeContext, prime
from sandlot.api.prime.errors import parse_body
from sandlot.protocol.gen.process import process_pb as ppb

router = APIRouter(prefix="/api/v1")

JOB_ID = re.compile(r"[0-9A-Fa-f]{8}")
CHECK_TIMEOUT_S = 30.0
MAX_OUTPUT = 64 * 1024
"""The check prints a line per job; more than this is a sandbox talking back, not an answer."""
PARALLEL_SANDBOXES = 8


class JobRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sandbox_id: limits.ShortId
    job_id: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8}$")]


class JobStatusBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    jobs: Annotated[list[JobRef], Field(min_length=1, max_length=100)]


def check_script(job_ids: list[str]) -> str:
    """One ``<job id> <exit status | "" | lost>`` line per job (the SDK's check, batched)."""
    lines = []
    for job_id in job_ids:
        assert JOB_ID.fullmatch(job_id)
        exit_file, pid_file = f"/tmp/job_{job_id}.exit", f"/tmp/job_{job_id}.launch/pid"
        # the exit file is read through ``head -c``: an endless one (``/dev/zero``) can't stall the check
        content = f"head -c 64 {exit_file} 2>/dev/null | grep ."
        lines.append(
            f"s=$({content} || {{ grep -qF {exit_file} /proc/$(cat {pid_file} 2>/dev/null)/cmdline "
            f"2>/dev/null && echo running; }} || {content} || echo lost); echo {job_id} $s"
        )
    return "\n".join(lines)


async def run(ctx: PrimeContext, sandbox_id: str, script: str) -> str:
    """Run ``script`` as root in the sandbox; its stdout (bounded). ``RuntimeError`` when it can't."""
    route = ctx.services.sandboxes.route(sandbox_id)
    if route is None:
        raise RuntimeError("the sandbox is not running")
    request = ppb.StartRequest(process=ppb.ProcessConfig(cmd="/bin/sh", args=["-c", script], envs={}, cwd="/"),
                               stdin=False)
    out = bytearray()
    stream = ctx.envd.processes(route).start(request, headers=ctx.envd.headers(route, "root"))
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            async for response in stream:
                event = response.event.event if response.event is not None else None
                if not isinstance(event, Oneof):
                    continue
                if event.field == "data" and isinstance(event.value.output, Oneof) and event.value.output.field == "stdout":
                    out += event.value.output.value
                    if len(out) > MAX_OUTPUT:
                        raise RuntimeError("the status check printed too much")
                elif event.field == "end":
                    return out.decode("utf-8", "replace")
    except TimeoutError as exc:
        raise RuntimeError(f"the status check took longer than {CHECK_TIMEOUT_S:g} s") from exc
    except RuntimeError:
        raise
    except Exception as exc:
        raise RuntimeError(f"the status check failed: {exc}") from exc
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    raise RuntimeError("the status check ended without an exit status")


def _parse(output: str, job_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        job_id, _, status = line.strip().partition(" ")
        if job_id in job_ids and job_id not in found:
            found[job_id] = status.strip()
    return found


async def _check(ctx: PrimeContext, sandbox_id: str, job_ids: list[str], limit: asyncio.Semaphore,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    statuses: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []

    def error(job_id: str, code: str, message: str) -> None:
        errors.append({"sandbox_id": sandbox_id, "job_id": job_id, "code": code, "message": message})

    async with limit:
        try:
            found = _parse(await run(ctx, sandbox_id, check_script(job_ids)), job_ids)
        except RuntimeError as exc:
            for job_id in job_ids:
                error(job_id, "RUNTIME_ERROR", str(exc))
            return statuses, errors
    for job_id in job_ids:
        status = found.get(job_id)
        if status is None or status == "lost":
            error(job_id, "NOT_FOUND", f"Background job {job_id} exited without recording an exit code"
                  if status == "lost" else f"Background job {job_id} was not checked")
        elif status == "running":
            statuses.append({"sandbox_id": sandbox_id, "job_id": job_id, "completed": False, "exit_code": None})
        elif re.fullmatch(r"-?[0-9]{1,4}", status):
            statuses.append({"sandbox_id": sandbox_id, "job_id": job_id, "completed": True, "exit_code": int(status)})
        else:
            error(job_id, "RUNTIME_ERROR", f"Background job {job_id} has an unreadable exit file")
    return statuses, errors


@router.post("/sandbox/background-jobs/status:batchGet", responses=openapi.prime_errors(422),
             openapi_extra=openapi.body(JobStatusBatchBody))
async def batch_status(request: Request, team_id: TeamId) -> dict[str, Any]:
    """Results in request order; a sandbox that is unknown or not running fails only its own jobs."""
    body = await parse_body(request, JobStatusBatchBody)
    ctx = prime(request)
    by_sandbox: dict[str, list[str]] = defaultdict(list)
    for job in body.jobs:
        if job.job_id not in by_sandbox[job.sandbox_id]:
            by_sandbox[job.sandbox_id].append(job.job_id)
    statuses: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    runnable: list[str] = []
    with ctx.services.db.session() as session, session.begin():
        for sandbox_id, job_ids in by_sandbox.items():
            v = records.get(session, team_id, sandbox_id)
            code = "NOT_FOUND" if v is None else None if v.status == "RUNNING" else "NOT_RUNNING"
            if code is None:
                runnable.append(sandbox_id)
                continue
            message = f"Sandbox {sandbox_id} not found" if v is None else f"Sandbox {sandbox_id} is {v.status}"
            errors += [{"sandbox_id": sandbox_id, "job_id": j, "code": code, "message": message} for j in job_ids]
    limit = asyncio.Semaphore(PARALLEL_SANDBOXES)
    for found, failed in await asyncio.gather(*(_check(ctx, s, by_sandbox[s], limit) for s in runnable)):
        statuses += found
        errors += failed
    order = {(j.sandbox_id, j.job_id): i for i, j in reversed(list(enumerate(body.jobs)))}
    statuses.sort(key=lambda s: order[(s["sandbox_id"], s["job_id"])])
    errors.sort(key=lambda e: order[(e["sandbox_id"], e["job_id"])])
    return {"statuses": statuses, "errors": errors}
