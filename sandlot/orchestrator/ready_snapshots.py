"""Post-ready memory snapshots of templates with a start command (E2B-style).

When a build's startCmd runs and its readyCmd passes, the sandbox that did it is an
identity-less sandbox of the build exactly like a warm-pool one (same spec, start
command running, envd's first-use paths touched). The builder keeps a CRIU image of
it; sandboxes of the build are restored from that image into their own id, disk copy
and netns and get their identity through envd ``/init`` like a claimed warm sandbox,
so the start-up cost is paid once, at build time. A build without a usable image
falls back to booting and running the start command.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from sandlot.orchestrator.boot import Boot
from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.runtime.base import Runtime, SandboxHandle
from sandlot.settings import Settings
from sandlot.store import templates as template_store
from sandlot.store.database import Database
from sandlot.store.models import Build

log = structlog.get_logger("sandlot.ready_snapshots")


class ReadySnapshots:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, envd: EnvdAgent, boot: Boot) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.envd = envd
        self.boot = boot
        self.root = settings.template_snapshots_dir

    # --- build time ------------------------------------------------------------------------

    @asynccontextmanager
    async def booted(self, build: Build, sandbox_id: str) -> AsyncIterator[SandboxHandle]:
        """An identity-less sandbox of ``build`` (not yet stored) with envd up; removed afterwards."""
        await self.boot.ensure_layers(build)
        handle = await self.runtime.create(self.boot.warm_spec(sandbox_id, build))
        try:
            await self.envd.wait_healthy(handle.ip)
            yield handle
        finally:
            await asyncio.shield(self.runtime.kill(sandbox_id))

    async def prepare(self, handle: SandboxHandle, build: Build) -> None:
        """Start command, readyCmd and envd warm-up, as the warm pool does."""
        await self.boot.prepare(handle, build)

    async def save(self, handle: SandboxHandle, build_id: str) -> tuple[Path, float]:
        """Memory + disk snapshot of the prepared sandbox; its dir and the milliseconds it took."""
        dest = self.root / build_id
        await asyncio.to_thread(shutil.rmtree, dest, True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if self.settings.failpoint("ready-snapshot-fail"):
            raise RuntimeError("injected snapshot failure")
        await self.runtime.snapshot(handle.sandbox_id, dest, memory=True)
        return dest, (time.perf_counter() - t0) * 1000

    # --- create time -----------------------------------------------------------------------

    async def restore(self, build: Build, sandbox_id: str) -> SandboxHandle | None:
        """An identity-less sandbox of ``build`` restored from its snapshot, envd up; ``None``
        when the build has none or it could not be restored (the caller boots instead)."""
        if not build.ready_snapshot or not self._sized_as_built(build) or not self._here(build.ready_snapshot):
            return None
        try:
            handle = await self.runtime.clone(Path(build.ready_snapshot), sandbox_id)
            try:
                await self.envd.wait_healthy(handle.ip)
            except BaseException:
                await asyncio.shield(self.runtime.kill(sandbox_id))
                raise
        except Exception as exc:
            log.warning("restoring the post-ready snapshot failed; booting instead", build_id=build.id,
                        sandbox_id=sandbox_id, error=str(exc)[:500])
            return None
        return handle

    def _here(self, path: str) -> bool:
        """Under ``sandlot node`` a build's snapshot is on the node that built it: the others boot
        (and run the start command) instead, as for a build without one (docs/scale-out.md). Nodes
        may share one data dir path and instance name, so the dir must exist here too."""
        return self.settings.role != "node" or (Path(path).is_relative_to(self.root) and Path(path).is_dir())

    def _sized_as_built(self, build: Build) -> bool:
        """A restore keeps the snapshot's CPU, memory and disk: a create that asks for other
        sizes (the Prime façade's ``cpu_cores``/``memory_gb``/``disk_size_gb``) must boot."""
        with self.db.session() as session:
            stored = session.get(Build, build.id)
            return stored is not None and (stored.cpu_count, stored.memory_mb, stored.disk_mb) == (
                build.cpu_count, build.memory_mb, build.disk_mb)

    # --- lifecycle -------------------------------------------------------------------------

    async def discard(self, paths: list[str]) -> None:
        """Remove snapshot dirs whose builds are gone (and the instance's dir once empty;
        a later snapshot re-creates it)."""
        for path in paths:
            await asyncio.to_thread(shutil.rmtree, path, True)
        try:
            self.root.rmdir()
        except OSError:
            pass

    def remove_orphans(self) -> None:
        """Snapshot dirs no build points at (a build interrupted by a crash) are deleted."""
        if not self.root.is_dir():
            return
        with self.db.session() as session:
            known = template_store.ready_snapshot_paths(session)
        for entry in self.root.iterdir():
            if str(entry) not in known:
                log.warning("removing orphan template snapshot dir", path=str(entry))
                shutil.rmtree(entry, ignore_errors=True)
