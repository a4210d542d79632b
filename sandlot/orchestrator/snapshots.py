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

from typing import Any

import asyncio
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from sandlot import ids
from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.orchestrator.errors import Conflict, InsufficientStorage, OperationFailed
from sandlot.orchestrator.snapshot_images import SnapshotImages
from sandlot.orchestrator.lifecycle import RUNNING, Lifecycle
from sandlot.orchestrator.network import NetworkPolicies
from sandlot.orchestrator.pausing import Pauser
from sandlot.orchestrator.requests import CloneRequest, MountVolumes
from sandlot.quotas import reserve_snapshot
from sandlot.runtime import disk
from sandlot.runtime.base import Runtime
from sandlot.settings import Settings
from sandlot.store import snapshots as snapshot_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox, Snapshot

log = structlog.get_logger("sandlot.snapshots")

MAX_FORKS = 100
"""E2B's server limit on one fork call's ``count`` (the Python SDK checks 20 before sending; the JS
SDK and raw API calls may ask up to this). The team's sandbox quota still bounds how many start."""


def clone_policy(source: Snapshot | Sandbox, request: CloneRequest) -> tuple[bool | None, dict[str, Any] | None]:
    """The clone's (allow_internet_access, network): the source's, with explicit create options on top.
    Workload identity (``iam``) is the source's own: a clone has none unless its create gives one."""
    allow = source.allow_internet_access if request.allow_internet_access is None else request.allow_internet_access
    network = {k: v for k, v in (source.network or {}).items() if k != "iam"}
    network.update(request.network or {})
    return allow, (network or None)


def _drop_empty(directory: Path) -> None:
    """Per-instance snapshot dirs go when their last snapshot does (a concurrent
    snapshot re-creates it with ``mkdir(parents=True)``)."""
    try:
        directory.rmdir()
    except OSError:
        pass


class Snapshots:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, lifecycle: Lifecycle, envd: EnvdAgent,
                 network: NetworkPolicies, pauser: Pauser) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.lifecycle = lifecycle
        self.envd = envd
        self.network = network
        self.pauser = pauser
        self.mount_volumes: MountVolumes | None = None
        """Set by the manager: a clone binds its source's volumes (shared, as E2B mounts them)."""
        self.images: SnapshotImages | None = None
        """Set by the manager under ``sandlot node``: snapshots published, other nodes' fetched."""

    async def _dump(self, sandbox_id: str, dest: Path, memory: bool) -> Sandbox:
        """Snapshot a running sandbox into ``dest`` under its lock; returns its row."""
        async with self.lifecycle.lock(sandbox_id):
            row = self.lifecycle.get(sandbox_id)
            if row.state != RUNNING:
                raise Conflict(f"Sandbox \"{sandbox_id}\" is {row.state}: only running sandboxes can be snapshotted")
            if memory:
                self.pauser.check_disk(sandbox_id)
            try:
                with self.lifecycle.timed("snapshot"):
                    await self.runtime.snapshot(sandbox_id, dest, memory=memory)
            except Exception as exc:
                alive = await self.runtime.is_alive(sandbox_id)
                message = (f"Failed to snapshot sandbox \"{sandbox_id}\": {exc}"
                           + (". The sandbox keeps running" if alive else ""))
                if disk.out_of_space(exc):
                    raise InsufficientStorage(message) from exc
                raise OperationFailed(message) from exc
        return row

    async def create(self, team_id: str, sandbox_id: str, name: str | None, memory: bool = True) -> Snapshot:
        """Snapshot a running sandbox of the team; a name the team used before gets the new content."""
        with self.db.session() as session:
            existing = snapshot_store.resolve(session, team_id, name) if name else None   # names are per team
        dest = self.settings.snapshots_dir / ids.new_template_id()
        row = await self._dump(sandbox_id, dest, memory)
        if existing is not None:   # same name: the existing snapshot gets the new content (as E2B)
            with self.db.session() as session, session.begin():
                snap = session.get(Snapshot, existing.id)
                assert snap is not None
                old_path, snap.path, snap.memory = snap.path, str(dest), memory
                snap.source_sandbox_id, snap.envd_access_token = sandbox_id, row.envd_access_token
                snap.env_vars = row.env_vars or {}
                snap.allow_internet_access, snap.network = row.allow_internet_access, row.network
                snap.volume_mounts = row.volume_mounts
            await asyncio.to_thread(shutil.rmtree, old_path, True)
            with self.db.session() as session:
                fresh = session.get(Snapshot, existing.id)
                assert fresh is not None
            if self.images is not None:
                await self.images.publish(fresh)
            return fresh
        snapshot_id = dest.name
        snap = Snapshot(
            id=snapshot_id, team_id=team_id, name=name or None, source_sandbox_id=sandbox_id,
            template_id=row.template_id, build_id=row.build_id, alias=row.alias, cpu_count=row.cpu_count,
            memory_mb=row.memory_mb, disk_mb=row.disk_mb, envd_version=row.envd_version,
            envd_access_token=row.envd_access_token, env_vars=row.env_vars or {}, memory=memory, path=str(dest), node_id=self.lifecycle.node_id,
            allow_internet_access=row.allow_internet_access, network=row.network,
            volume_mounts=row.volume_mounts,
        )
        try:
            with self.db.session() as session, session.begin():
                reserve_snapshot(session, self.settings, team_id)  # counted where it is inserted
                session.add(snap)
        except Exception:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        log.info("snapshot created", snapshot_id=snapshot_id, sandbox_id=sandbox_id, memory=memory)
        if self.images is not None:
            await self.images.publish(snap)
        return snap

    async def delete(self, team_id: str, ref: str) -> bool:
        with self.db.session() as session, session.begin():
            snap = snapshot_store.resolve(session, team_id, ref)
            if snap is None:
                return False
            path = snap.path
            session.delete(snap)
        await asyncio.to_thread(shutil.rmtree, path, True)
        _drop_empty(Path(path).parent)
        return True

    async def start_from(self, snap: Snapshot, request: CloneRequest) -> Sandbox:
        """A new sandbox restored from a snapshot (memory, disk); its own id, IP and token."""
        path = await self.images.local_path(snap) if self.images is not None else Path(snap.path)
        return await self._clone(path, snap, request)

    async def _clone(self, path: Path, source: Snapshot | Sandbox, request: CloneRequest) -> Sandbox:
        allow_internet_access, network = clone_policy(source, request)
        policy = self.network.policy(allow_internet_access, network)   # a bad combination: 400 before any work
        now = datetime.now(timezone.utc)
        env_vars = dict(source.env_vars or {})
        env_vars.update(request.env_vars or {})
        row = Sandbox(
            id=ids.new_sandbox_id(), team_id=request.team_id, template_id=source.template_id,
            build_id=source.build_id, alias=source.alias, started_at=now,
            end_at=now + timedelta(seconds=request.timeout_s),
            cpu_count=source.cpu_count, memory_mb=source.memory_mb, disk_mb=source.disk_mb,
            envd_version=source.envd_version, envd_access_token=ids.new_access_token(),
            metadata_=request.metadata or {}, env_vars=env_vars, auto_pause=False,
            allow_internet_access=allow_internet_access, network=network,
            volume_mounts=source.volume_mounts,
        )
        self.lifecycle.admit(row)
        sandbox_id = row.id
        try:
            async with self.lifecycle.lock(sandbox_id):
                if self.mount_volumes is not None:   # its config binds the source's volumes
                    await self.mount_volumes(row.volume_mounts)
                # the policy is on the new slot before the image's processes run again
                handle = await self.runtime.clone(path, sandbox_id, egress=policy)
                try:
                    await self.envd.wait_healthy(handle.ip)
                    await self.envd.init(handle.ip, source.envd_access_token,
                                         {"accessToken": row.envd_access_token, "envVars": env_vars})
                except BaseException:
                    await self.network.clear(handle.ip)
                    await self.runtime.kill(sandbox_id)
                    raise
        except BaseException as exc:
            self.lifecycle.abandon(sandbox_id, exc, "Failed to start sandbox from snapshot")
            raise
        row = self.lifecycle.activate(sandbox_id, handle, request.timeout_s)
        log.info("sandbox started from snapshot", sandbox_id=sandbox_id, ip=handle.ip)
        return row

    async def fork(self, team_id: str, sandbox_id: str, count: int, timeout_s: int) -> list[Sandbox | Exception]:
        """``count`` independent copies of a running sandbox, all from one memory image."""
        dest = self.settings.snapshots_dir / f"fork-{ids.new_template_id()}"
        source = await self._dump(sandbox_id, dest, True)
        results: list[Sandbox | Exception] = []
        try:
            for _ in range(count):
                try:
                    results.append(await self._clone(dest, source, CloneRequest(team_id, timeout_s)))
                except Exception as exc:
                    results.append(exc)
        finally:
            await asyncio.to_thread(shutil.rmtree, dest, True)
            _drop_empty(dest.parent)
        return results

    def remove_orphans(self) -> None:
        """Snapshot dirs without a row (a snapshot or fork interrupted by a crash) are deleted."""
        base = self.settings.snapshots_dir
        if not base.is_dir():
            return
        with self.db.session() as session:
            known = snapshot_store.all_paths(session)
        for entry in base.iterdir():
            if str(entry) not in known:
                log.warning("removing orphan snapshot dir", path=str(entry))
                shutil.rmtree(entry, ignore_errors=True)
