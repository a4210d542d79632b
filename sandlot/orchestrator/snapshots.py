"""Snapshots (a running sandbox saved with memory + disk, it keeps running) and forks.

A snapshot is taken with the sandbox frozen for the time of a CRIU leave-running dump
and a copy of its overlay upper dir. New sandboxes restore that image into a new
container id, a copy of the disk and a new netns (new IP); envd's access token, baked
into the image's memory, is rotated through envd ``/init`` right after the restore.
A fork is a snapshot that only lives for the duration of the call.

Every clone keeps its source's network policy (egress rules, ``allowPublicTraffic``,
``maskRequestHost``): a no-internet, private sandbox never has a copy with internet or
public ports. Options given explicitly when creating from a snapshot override it field by
field, as they would on any create.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from sandlot import ids
from sandlot.orchestrator import pausing
from sandlot.orchestrator.envd_client import wait_healthy
from sandlot.quotas import reserve_sandbox, reserve_snapshot
from sandlot.store import sandboxes as sandbox_store
from sandlot.store import snapshots as snapshot_store
from sandlot.store.models import Sandbox, Snapshot

if TYPE_CHECKING:
    from sandlot.orchestrator.sandboxes import SandboxManager

log = structlog.get_logger("sandlot.snapshots")

MAX_FORKS = 20


@dataclass
class CloneRequest:
    team_id: str
    timeout_s: int
    metadata: dict[str, str] | None = None
    env_vars: dict[str, str] | None = None
    allow_internet_access: bool | None = None
    """``None``: the source's."""
    network: dict | None = None
    """Stored (camelCase) ``network`` keys given at create; the others are the source's."""


def clone_policy(source: Snapshot | Sandbox, request: CloneRequest) -> tuple[bool | None, dict | None]:
    """The clone's (allow_internet_access, network): the source's, with explicit create options on top."""
    allow = source.allow_internet_access if request.allow_internet_access is None else request.allow_internet_access
    network = dict(source.network or {})
    network.update(request.network or {})
    return allow, (network or None)


def _error(status: int, message: str) -> Exception:
    from sandlot.orchestrator.sandboxes import SandboxError

    return SandboxError(status, message)


async def _dump(mgr: "SandboxManager", sandbox_id: str, dest: Path, memory: bool) -> Sandbox:
    """Snapshot a running sandbox into ``dest`` under its lock; returns its row."""
    async with mgr._lock(sandbox_id):
        with mgr.db.session() as session:
            row = session.get(Sandbox, sandbox_id)
        if row is None:
            raise _error(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
        if row.state != "running":
            raise _error(409, f"Sandbox \"{sandbox_id}\" is {row.state}: only running sandboxes can be snapshotted")
        if memory:
            pausing._check_disk(mgr, sandbox_id)
        try:
            await mgr.runtime.snapshot(sandbox_id, dest, memory=memory)
        except Exception as exc:
            alive = await mgr.runtime.is_alive(sandbox_id)
            status = 507 if "no space left" in str(exc).lower() else 500
            raise _error(status, f"Failed to snapshot sandbox \"{sandbox_id}\": {exc}"
                                 + (". The sandbox keeps running" if alive else "")) from exc
    return row


async def create_snapshot(mgr: "SandboxManager", team_id: str, sandbox_id: str, name: str | None,
                          memory: bool = True) -> Snapshot:
    with mgr.db.session() as session:
        if sandbox_store.get_for_team(session, team_id, sandbox_id) is None:
            raise _error(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
        existing = snapshot_store.resolve(session, team_id, name) if name else None   # names are per team
    dest = mgr.settings.snapshots_dir / ids.new_template_id()
    row = await _dump(mgr, sandbox_id, dest, memory)
    if existing is not None:   # same name: the existing snapshot gets the new content (as E2B)
        with mgr.db.session() as session, session.begin():
            snap = session.get(Snapshot, existing.id)
            assert snap is not None
            old_path, snap.path, snap.memory = snap.path, str(dest), memory
            snap.source_sandbox_id, snap.envd_access_token = sandbox_id, row.envd_access_token
            snap.env_vars = row.env_vars or {}
            snap.allow_internet_access, snap.network = row.allow_internet_access, row.network
        await asyncio.to_thread(shutil.rmtree, old_path, True)
        with mgr.db.session() as session:
            return session.get(Snapshot, existing.id)
    snapshot_id = dest.name
    snap = Snapshot(
        id=snapshot_id, team_id=team_id, name=name or None, source_sandbox_id=sandbox_id,
        template_id=row.template_id, build_id=row.build_id, alias=row.alias, cpu_count=row.cpu_count,
        memory_mb=row.memory_mb, disk_mb=row.disk_mb, envd_version=row.envd_version,
        envd_access_token=row.envd_access_token, env_vars=row.env_vars or {}, memory=memory, path=str(dest),
        allow_internet_access=row.allow_internet_access, network=row.network,
    )
    try:
        with mgr.db.session() as session, session.begin():
            reserve_snapshot(session, mgr.settings, team_id, error=_error)  # counted where it is inserted
            session.add(snap)
    except Exception:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    log.info("snapshot created", snapshot_id=snapshot_id, sandbox_id=sandbox_id, memory=memory)
    return snap


async def delete_snapshot(mgr: "SandboxManager", team_id: str, ref: str) -> bool:
    with mgr.db.session() as session, session.begin():
        snap = snapshot_store.resolve(session, team_id, ref)
        if snap is None:
            return False
        path = snap.path
        session.delete(snap)
    await asyncio.to_thread(shutil.rmtree, path, True)
    _drop_empty(Path(path).parent)
    return True


async def start_from(mgr: "SandboxManager", snap: Snapshot, request: CloneRequest) -> Sandbox:
    """A new sandbox restored from a snapshot (memory, disk); its own id, IP and token."""
    return await _clone(mgr, Path(snap.path), snap, request)


async def _clone(mgr: "SandboxManager", path: Path, source: Snapshot | Sandbox, request: CloneRequest) -> Sandbox:
    allow_internet_access, network = clone_policy(source, request)
    policy = mgr.egress_policy(allow_internet_access, network)   # a bad combination: 400 before any work
    sandbox_id = ids.new_sandbox_id()
    now = datetime.now(timezone.utc)
    env_vars = dict(source.env_vars or {})
    env_vars.update(request.env_vars or {})
    row = Sandbox(
        id=sandbox_id, team_id=request.team_id, template_id=source.template_id, build_id=source.build_id,
        alias=source.alias, state="creating", started_at=now, end_at=now + timedelta(seconds=request.timeout_s),
        cpu_count=source.cpu_count, memory_mb=source.memory_mb, disk_mb=source.disk_mb,
        envd_version=source.envd_version, envd_access_token=ids.new_access_token(),
        metadata_=request.metadata or {}, env_vars=env_vars, auto_pause=False,
        allow_internet_access=allow_internet_access, network=network,
    )
    with mgr.db.session() as session, session.begin():
        reserve_sandbox(session, mgr.settings, request.team_id, error=_error)
        session.add(row)
    try:
        async with mgr._lock(sandbox_id):
            # the policy is on the new slot before the image's processes run again
            handle = await mgr.runtime.clone(path, sandbox_id, egress=policy)
            try:
                port = mgr.settings.envd_port
                await wait_healthy(mgr._http, handle.ip, port, mgr.settings.envd_start_timeout_s)
                response = await mgr._http.post(
                    f"http://{handle.ip}:{port}/init", timeout=10,
                    headers={"X-Access-Token": source.envd_access_token},
                    json={"accessToken": row.envd_access_token, "envVars": env_vars})
                if response.status_code >= 300:
                    raise RuntimeError(f"envd /init answered {response.status_code}")
            except BaseException:
                await mgr._clear_network(handle.ip)
                await mgr.runtime.kill(sandbox_id)
                raise
    except BaseException as exc:
        mgr.abandon(sandbox_id, exc, "Failed to start sandbox from snapshot")
        raise
    row = mgr.activate(sandbox_id, handle, request.timeout_s)
    log.info("sandbox started from snapshot", sandbox_id=sandbox_id, ip=handle.ip)
    return row


async def fork(mgr: "SandboxManager", team_id: str, sandbox_id: str, count: int,
               timeout_s: int) -> list[Sandbox | Exception]:
    """``count`` independent copies of a running sandbox, all from one memory image."""
    with mgr.db.session() as session:
        source = sandbox_store.get_for_team(session, team_id, sandbox_id)
    if source is None:
        raise _error(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
    dest = mgr.settings.snapshots_dir / f"fork-{ids.new_template_id()}"
    source = await _dump(mgr, sandbox_id, dest, True)
    results: list[Sandbox | Exception] = []
    try:
        for _ in range(count):
            try:
                results.append(await _clone(mgr, dest, source, CloneRequest(team_id, timeout_s)))
            except Exception as exc:
                results.append(exc)
    finally:
        await asyncio.to_thread(shutil.rmtree, dest, True)
        _drop_empty(dest.parent)
    return results


def _drop_empty(directory: Path) -> None:
    """Per-instance snapshot dirs go when their last snapshot does (a concurrent
    snapshot re-creates it with ``mkdir(parents=True)``)."""
    try:
        directory.rmdir()
    except OSError:
        pass


def remove_orphans(mgr: "SandboxManager") -> None:
    """Snapshot dirs without a row (a snapshot or fork interrupted by a crash) are deleted."""
    base = mgr.settings.snapshots_dir
    if not base.is_dir():
        return
    with mgr.db.session() as session:
        known = snapshot_store.all_paths(session)
    for entry in base.iterdir():
        if str(entry) not in known:
            log.warning("removing orphan snapshot dir", path=str(entry))
            shutil.rmtree(entry, ignore_errors=True)
