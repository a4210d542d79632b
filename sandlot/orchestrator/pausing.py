"""Pause and resume of sandboxes (CRIU memory + disk, or disk only), autoPause and autoResume.

The row moves ``running → pausing → paused`` and ``paused → resuming → running``; the
intermediate states are written first so a crash half-way is settled at the next start
(:func:`recover`). A pause that fails leaves the sandbox running.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import structlog

from sandlot.orchestrator.envd_client import wait_healthy
from sandlot.quotas import reserve_sandbox
from sandlot.runtime import cgroups, disk
from sandlot.store import sandboxes as sandbox_store
from sandlot.store.models import Sandbox

if TYPE_CHECKING:
    from sandlot.orchestrator.sandboxes import Route, SandboxManager

log = structlog.get_logger("sandlot.pausing")


def _error(status: int, message: str) -> Exception:
    from sandlot.orchestrator.sandboxes import SandboxError

    return SandboxError(status, message)


def _not_found(sandbox_id: str) -> Exception:
    return _error(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")


async def _set_route(mgr: "SandboxManager", row: Sandbox, ip: str) -> None:
    """Egress policy (the nft table may have been rebuilt since), route and metrics."""
    from sandlot.orchestrator.sandboxes import route_for

    await mgr.apply_network(ip, row.allow_internet_access, row.network)
    mgr._routes[row.id] = route_for(row, ip)
    metrics = getattr(mgr, "metrics", None)
    if metrics is not None:
        metrics.track(row.id, row.cpu_count, row.disk_mb * 1024 * 1024)


def _check_disk(mgr: "SandboxManager", sandbox_id: str) -> None:
    """Refuse a memory pause that cannot fit on disk, before freezing anything."""
    usage = cgroups.read("memory", sandbox_id, "memory.usage_in_bytes", parent=mgr.runtime.cgroup_parent)
    need = int(usage or 0) + mgr.settings.checkpoint_min_free_mb * 1024 * 1024
    free = shutil.disk_usage(mgr.runtime.sandboxes_dir).free
    if free < need:
        raise _error(507, f"Not enough disk space to pause sandbox \"{sandbox_id}\": its memory needs "
                          f"{need // 2**20} MiB, {free // 2**20} MiB free. The sandbox keeps running")


def _out_of_space(mgr: "SandboxManager", exc: BaseException) -> bool:
    """Whether a failed dump/restore is the disk's fault: CRIU's error names ENOSPC only when
    its log's first lines do, so the free space left is asked too."""
    if disk.out_of_space(exc):
        return True
    try:
        return shutil.disk_usage(mgr.runtime.sandboxes_dir).free < 16 * 2**20
    except OSError:
        return False


async def pause(mgr: "SandboxManager", team_id: str, sandbox_id: str, memory: bool | None = None) -> None:
    with mgr.db.session() as session:
        row = sandbox_store.get_for_team(session, team_id, sandbox_id)
    if row is None:
        raise _not_found(sandbox_id)
    await pause_now(mgr, sandbox_id, memory)


async def pause_now(mgr: "SandboxManager", sandbox_id: str, memory: bool | None = None) -> None:
    async with mgr._lock(sandbox_id):
        with mgr.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is None:
                raise _not_found(sandbox_id)
            if row.state == "paused":
                raise _error(409, f"Error pausing sandbox - sandbox '{sandbox_id}' is already paused")
            if row.state != "running":
                raise _error(409, f"Sandbox \"{sandbox_id}\" is {row.state}")
            keep_memory = row.pause_memory if memory is None else memory
            if keep_memory:
                _check_disk(mgr, sandbox_id)
            row.state = "pausing"
        route = mgr._routes.pop(sandbox_id, None)
        try:
            if mgr.settings.failpoint("pause-fail"):
                raise RuntimeError("injected checkpoint failure")
            timings = await mgr.runtime.pause(sandbox_id, memory=keep_memory)
        except Exception as exc:
            alive = await mgr.runtime.is_alive(sandbox_id)
            with mgr.db.session() as session, session.begin():
                row = session.get(Sandbox, sandbox_id)
                if row is not None:
                    row.state = "running" if alive else row.state
            if alive and route is not None:
                mgr._routes[sandbox_id] = route
            log.error("pause failed", sandbox_id=sandbox_id, error=str(exc), still_running=alive)
            status = 507 if _out_of_space(mgr, exc) else 500
            if alive:
                raise _error(status, f"Failed to pause sandbox \"{sandbox_id}\": {exc}. The sandbox keeps running") from exc
            raise _error(500, f"Failed to pause sandbox \"{sandbox_id}\": {exc}") from exc
        now = datetime.now(timezone.utc)
        with mgr.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            assert row is not None
            row.state = "paused"
            row.paused_at = now
            row.end_at = now
        metrics = getattr(mgr, "metrics", None)
        if metrics is not None:
            metrics.forget(sandbox_id)
        if route is not None:
            # CRIU's network lock swallowed the FINs of envd's sockets: peers must forget them
            for hook in mgr.pause_hooks:
                await hook(route.ip)
    log.info("sandbox paused", sandbox_id=sandbox_id, memory=keep_memory, **{k: round(v, 1) for k, v in timings.items()})


async def resume(mgr: "SandboxManager", team_id: str, sandbox_id: str, timeout_s: int) -> tuple[Sandbox, bool]:
    """Resume a paused sandbox (``True``) or extend a running one (``False``)."""
    with mgr.db.session() as session:
        row = sandbox_store.get_for_team(session, team_id, sandbox_id)
    if row is None:
        raise _not_found(sandbox_id)
    if row.state == "running":
        return await mgr.keep_alive(team_id, sandbox_id, timeout_s), False
    return await resume_now(mgr, sandbox_id, timeout_s)


async def resume_now(mgr: "SandboxManager", sandbox_id: str, timeout_s: int) -> tuple[Sandbox, bool]:
    async with mgr._lock(sandbox_id):
        with mgr.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is None:
                raise _not_found(sandbox_id)
            if row.state == "running":
                return row, False
            if row.state != "paused":
                raise _error(409, f"Sandbox \"{sandbox_id}\" is {row.state}")
            reserve_sandbox(session, mgr.settings, row.team_id, error=_error)  # a resumed sandbox runs again
            row.state = "resuming"
        try:
            handle = await mgr.runtime.resume(sandbox_id)
            try:
                await wait_healthy(mgr._http, handle.ip, mgr.settings.envd_port, mgr.settings.envd_start_timeout_s)
                if handle.rebooted:
                    await mgr.reidentify(row, handle.ip)
            except BaseException:
                await mgr.runtime.abort_resume(sandbox_id)
                raise
            mgr.runtime.finish_resume(sandbox_id)
        except Exception as exc:
            with mgr.db.session() as session, session.begin():
                row = session.get(Sandbox, sandbox_id)
                if row is not None:
                    row.state = "paused"
            log.error("resume failed", sandbox_id=sandbox_id, error=str(exc))
            # the data dir's disk full (bench/soak.py): 507, as for pause, not an internal error
            status = 507 if _out_of_space(mgr, exc) else 500
            raise _error(status, f"Failed to resume sandbox \"{sandbox_id}\": {exc}. It stays paused") from exc
        now = datetime.now(timezone.utc)
        with mgr.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            assert row is not None
            row.state = "running"
            row.ip = handle.ip
            row.paused_at = None
            row.end_at = min(now + timedelta(seconds=timeout_s),
                             row.started_at + timedelta(seconds=mgr.settings.max_lifetime_s))
        await _set_route(mgr, row, handle.ip)
    log.info("sandbox resumed", sandbox_id=sandbox_id)
    return row, True


async def auto_resume(mgr: "SandboxManager", sandbox_id: str) -> "Route | None":
    """Front-door hook: resume a paused sandbox that asked for autoResume."""
    with mgr.db.session() as session:
        row = session.get(Sandbox, sandbox_id)
    if row is None or row.state not in ("paused", "pausing") or not row.auto_resume:
        return None
    try:
        await resume_now(mgr, sandbox_id, mgr.settings.default_timeout_s)
    except Exception as exc:
        log.error("auto-resume failed", sandbox_id=sandbox_id, error=str(exc))
        return None
    return mgr.route(sandbox_id)


async def recover(mgr: "SandboxManager", row: Sandbox) -> bool:
    """Settle a paused/pausing/resuming row after a restart; ``False`` = the sandbox is lost."""
    outcome = await mgr.runtime.recover_pause(row.id)
    if outcome == "running":
        info = mgr.runtime._read_runtime_json(row.id) or {}
        try:
            await wait_healthy(mgr._http, info["ip"], mgr.settings.envd_port, mgr.settings.envd_start_timeout_s)
        except Exception:
            return False
        row.state = "running"
        row.ip = info["ip"]
        row.paused_at = None
        if row.end_at <= datetime.now(timezone.utc):
            row.end_at = datetime.now(timezone.utc) + timedelta(seconds=mgr.settings.default_timeout_s)
        await _set_route(mgr, row, info["ip"])
        log.warning("interrupted pause/resume settled as running", sandbox_id=row.id)
        return True
    if outcome == "paused":
        if row.state != "paused":
            row.state = "paused"
            row.paused_at = row.paused_at or datetime.now(timezone.utc)
            log.warning("interrupted pause/resume settled as paused", sandbox_id=row.id)
        return True
    return False


async def remove_orphans(mgr: "SandboxManager") -> None:
    """Paused sandbox dirs without a row (a kill interrupted half-way) are deleted."""
    with mgr.db.session() as session:
        known = {row.id for row in sandbox_store.all_live(session)}
    for sandbox_id in mgr.runtime.paused_ids():
        if sandbox_id not in known:
            log.warning("removing orphan paused sandbox", sandbox_id=sandbox_id)
            await mgr.runtime.kill(sandbox_id)
    from sandlot.orchestrator import snapshots

    snapshots.remove_orphans(mgr)
