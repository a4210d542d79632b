"""Pause and resume of sandboxes (CRIU memory + disk, or disk only), autoPause and autoResume.

The states (``running → pausing → paused``, ``paused → resuming → running``) are moved by
:class:`~sandlot.orchestrator.lifecycle.Lifecycle`, the intermediate ones first, so a crash
half-way is settled at the next start (:meth:`Pauser.recover`). A pause that fails leaves
the sandbox running.

A memory pause on a single box is first *hot* (``settings.hot_pause_s``): the container is
only frozen (``Runtime.hot_pause``), the row ``paused`` with ``pause_hot``; a resume thaws it.
:meth:`Pauser.cool` later dumps it with CRIU as a pause always did (``cooling.py`` decides
when). Under ``sandlot node`` every pause is cold at once: its image goes to the blob store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from sandlot.orchestrator.boot import Boot
from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.orchestrator.errors import GuestUnhealthy, InsufficientStorage, OperationFailed, SandboxNotFound
from sandlot.orchestrator.lifecycle import PAUSED, PAUSING, RUNNING, Lifecycle
from sandlot.orchestrator.network import NetworkPolicies
from sandlot.orchestrator.requests import MountVolumes
from sandlot.proxy.routes import Route
from sandlot.runtime import disk
from sandlot.runtime.base import Runtime, SandboxHandle
from sandlot.settings import Settings
from sandlot.store.database import Database
from sandlot.store.models import Build, Sandbox

log = structlog.get_logger("sandlot.pausing")


class Pauser:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, lifecycle: Lifecycle,
                 envd: EnvdAgent, network: NetworkPolicies, boot: Boot) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.lifecycle = lifecycle
        self.envd = envd
        self.network = network
        self.boot = boot
        self.mount_volumes: MountVolumes | None = None
        """Set by the manager: a resume binds the sandbox's volumes again."""
        self.published: Callable[[str, bool], Awaitable[None]] | None = None
        """Set by the manager under ``sandlot node``: a completed pause's image into the blob store."""
        self.adopt: Callable[[Sandbox], Awaitable[None]] | None = None
        """Set by the manager under ``sandlot node``: a sandbox paused on another node is moved here
        before it is resumed (``adoption.py``)."""
        self.cooled_hooks: list[Callable[[Sandbox], None]] = []
        """Told of each hot pause that became a checkpoint (its container released: volumes)."""

    @property
    def hot(self) -> bool:
        """Whether a memory pause starts hot here (never under ``sandlot node``: another node
        must be able to resume it from the blob store)."""
        return self.settings.hot_pause_s > 0 and self.settings.role != "node"

    def check_disk(self, sandbox_id: str) -> None:
        """Refuse a memory image that cannot fit on disk, before freezing anything."""
        need = self.runtime.memory_bytes(sandbox_id) + self.settings.checkpoint_min_free_mb * 1024 * 1024
        free = self.runtime.free_bytes()
        if free < need:
            raise InsufficientStorage(
                f"Not enough disk space to pause sandbox \"{sandbox_id}\": its memory needs "
                f"{need // 2**20} MiB, {free // 2**20} MiB free. The sandbox keeps running")

    def out_of_space(self, exc: BaseException) -> bool:
        """Whether a failed dump/restore is the disk's fault: CRIU's error names ENOSPC only when
        its log's first lines do, so the free space left is asked too."""
        if disk.out_of_space(exc):
            return True
        try:
            return self.runtime.free_bytes() < 16 * 2**20
        except OSError:
            return False

    # --- pause ------------------------------------------------------------------------------

    async def guest_answers(self, row: Sandbox) -> bool:
        """Whether the running sandbox's envd answers now (one short ``/health`` probe)."""
        return row.ip is not None and await self.envd.probe(row.ip)

    async def pause(self, sandbox_id: str, memory: bool | None = None, *, strict: bool = False,
                    on_timeout: bool = False, only_if: Callable[[Sandbox], bool] | None = None) -> None:
        """Pause a running sandbox (``memory``: the sandbox's setting when ``None``). ``only_if`` is
        checked on the current row under the lock (the reaper: is it still due?); false: no-op.

        The guest agent is asked first, as E2B does: when it does not answer, a ``strict`` pause
        (``requireHealthyGuest``) and a filesystem-only one are refused (:class:`GuestUnhealthy`,
        the sandbox keeps running); a memory pause proceeds and the sandbox is marked
        ``envd_unresponsive_at_pause`` (it then resumes only without memory). ``on_timeout``: the
        reaper's autoPause, which keeps the disk of a hung guest rather than have it killed."""
        async with self.lifecycle.lock(sandbox_id):
            row = self.lifecycle.get(sandbox_id)
            if only_if is not None and not only_if(row):
                return
            keep_memory = row.pause_memory if memory is None else memory
            answers = True
            if row.state == RUNNING:   # (otherwise begin_pause says why not)
                answers = await self.guest_answers(row)
                if not answers and (strict or (not keep_memory and not on_timeout)):
                    raise GuestUnhealthy(
                        f"Sandbox \"{sandbox_id}\"'s guest agent (envd) is not responding: "
                        f"{'a filesystem-only pause needs it' if not keep_memory else 'pause refused (requireHealthyGuest)'}"
                        ". The sandbox keeps running")
                if keep_memory:
                    self.check_disk(sandbox_id)
            hot = keep_memory and self.hot
            route = self.lifecycle.begin_pause(sandbox_id, envd_unresponsive=keep_memory and not answers)
            try:
                if self.settings.failpoint("pause-fail"):
                    raise RuntimeError("injected checkpoint failure")
                if hot:
                    timings = await self.runtime.hot_pause(sandbox_id)
                else:
                    timings = await self.runtime.pause(sandbox_id, memory=keep_memory)
            except Exception as exc:
                alive = await self.runtime.is_alive(sandbox_id)
                if hot and alive:   # a freeze that failed half-way
                    await self.runtime.thaw_if_frozen(sandbox_id)
                self.lifecycle.pause_failed(sandbox_id, route, alive=alive)
                log.error("pause failed", sandbox_id=sandbox_id, error=str(exc), still_running=alive)
                if not alive:
                    raise OperationFailed(f"Failed to pause sandbox \"{sandbox_id}\": {exc}") from exc
                message = f"Failed to pause sandbox \"{sandbox_id}\": {exc}. The sandbox keeps running"
                if self.out_of_space(exc):
                    raise InsufficientStorage(message) from exc
                raise OperationFailed(message) from exc
            await self.lifecycle.paused(sandbox_id, route, hot=hot)
            if self.published is not None and not hot:
                await self.published(sandbox_id, keep_memory)
        log.info("sandbox paused", sandbox_id=sandbox_id, memory=keep_memory, hot=hot, envd_answered=answers,
                 **{k: round(v, 1) for k, v in timings.items()})

    # --- hot pauses: the cool-down into a checkpoint ------------------------------------------

    async def cool(self, sandbox_id: str) -> bool:
        """Turn a hot pause into a CRIU checkpoint, as a cold pause would have taken at once (its
        memory goes to disk, the container is released; the row stays ``paused``). A no-op for a
        sandbox that is not hot-paused (any more); ``True`` when it cooled. A hot pause whose
        container died is reported lost. On failure (disk full, CRIU) it stays hot and frozen."""
        async with self.lifecycle.lock(sandbox_id):
            try:
                row = self.lifecycle.get(sandbox_id)
            except SandboxNotFound:
                return False
            if row.state != PAUSED or not row.pause_hot:
                return False
            if not await self.runtime.is_alive(sandbox_id):
                await self._lost_hot(sandbox_id)
                return False
            self.check_disk(sandbox_id)
            try:
                timings = await self.runtime.pause(sandbox_id, memory=True)
            except Exception as exc:
                if await self.runtime.is_alive(sandbox_id):
                    raise OperationFailed(f"Failed to cool hot-paused sandbox \"{sandbox_id}\": {exc}. "
                                          "It stays paused in memory") from exc
                # the dump ended its processes: the image decides (complete = a cold pause)
                if (await self.runtime.recover_pause(sandbox_id)).outcome != "paused":
                    await self._lost_hot(sandbox_id)
                    return False
                timings = {}
            row = await self.lifecycle.cooled(sandbox_id)
            for hook in self.cooled_hooks:
                hook(row)
            if self.published is not None:
                await self.published(sandbox_id, True)
        log.info("hot pause cooled into a checkpoint", sandbox_id=sandbox_id,
                 **{k: round(v, 1) for k, v in timings.items()})
        return True

    async def _lost_hot(self, sandbox_id: str) -> None:
        log.warning("dropping hot-paused sandbox: its frozen container is gone", sandbox_id=sandbox_id)
        await self.runtime.kill(sandbox_id)
        self.lifecycle.vanished(sandbox_id)

    async def _thaw(self, row: Sandbox) -> SandboxHandle:
        """A hot pause's memory resume: its frozen processes carry on (``SandboxNotFound`` and the
        row gone when its container died meanwhile)."""
        if not await self.runtime.is_alive(row.id) or row.ip is None:
            await self._lost_hot(row.id)
            raise SandboxNotFound(row.id)
        await self.runtime.thaw_if_frozen(row.id)
        return SandboxHandle(row.id, row.ip)

    # --- resume -----------------------------------------------------------------------------

    async def resume(self, sandbox_id: str, timeout_s: int, *, memory: bool = True) -> tuple[Sandbox, bool]:
        """Resume a paused sandbox: its row and ``True``, or ``False`` when it was running already.
        ``memory=False`` (E2B's ``on_resume="reboot"``): cold-boot it from its disk, its memory
        image (if any) discarded; envd is then re-identified as after any reboot."""
        async with self.lifecycle.lock(sandbox_id):
            if self.adopt is not None:
                await self.adopt(self.lifecycle.get(sandbox_id))
            row = self.lifecycle.begin_resume(sandbox_id, memory=memory)
            if row is None:
                return self.lifecycle.get(sandbox_id), False
            thawed = row.pause_hot and memory
            try:
                if thawed:
                    handle = await self._thaw(row)
                else:
                    if row.pause_hot:   # a reboot of a hot pause: its processes go, its disk stays
                        await self.runtime.pause(sandbox_id, memory=False)
                        row = await self.lifecycle.cooled(sandbox_id)
                    if self.mount_volumes is not None:   # the volumes it binds, mounted on the host again
                        await self.mount_volumes(row.volume_mounts)
                    handle = await self.runtime.resume(sandbox_id, memory=memory)
                try:
                    await self.envd.wait_healthy(handle.ip)
                    if handle.rebooted:
                        await self.boot.reidentify(row, self._build_of(row), handle.ip)
                except BaseException:
                    if thawed:   # frozen again: it stays hot-paused, as it was
                        await self.runtime.hot_pause(sandbox_id)
                    else:
                        await self.runtime.abort_resume(sandbox_id)
                    raise
                self.runtime.finish_resume(sandbox_id)
            except SandboxNotFound:
                raise
            except Exception as exc:
                self.lifecycle.resume_failed(sandbox_id)
                log.error("resume failed", sandbox_id=sandbox_id, error=str(exc))
                message = f"Failed to resume sandbox \"{sandbox_id}\": {exc}. It stays paused"
                # the data dir's disk full (bench/soak.py): 507, as for pause, not an internal error
                if self.out_of_space(exc):
                    raise InsufficientStorage(message) from exc
                raise OperationFailed(message) from exc
            # the runtime's rule table may have been rebuilt since the pause
            await self.network.apply(handle.ip, row.allow_internet_access, row.network)
            row = self.lifecycle.resumed(sandbox_id, handle.ip, timeout_s)
        log.info("sandbox resumed", sandbox_id=sandbox_id, rebooted=handle.rebooted, hot=thawed)
        return row, True

    def _build_of(self, row: Sandbox) -> Build:
        with self.db.session() as session:
            build = session.get(Build, row.build_id)
        if build is None:
            raise RuntimeError(f"the build of sandbox {row.id} is gone")
        return build

    async def auto_resume(self, sandbox_id: str) -> Route | None:
        """Front-door hook: resume a paused sandbox that asked for autoResume."""
        try:
            row = self.lifecycle.get(sandbox_id)
        except SandboxNotFound:
            return None
        if row.state not in (PAUSED, PAUSING) or not row.auto_resume:
            return None
        try:
            await self.resume(sandbox_id, self.settings.default_timeout_s)
        except Exception as exc:
            log.error("auto-resume failed", sandbox_id=sandbox_id, error=str(exc))
            return None
        return self.lifecycle.route(sandbox_id)

    # --- after a restart --------------------------------------------------------------------

    async def recover(self, row: Sandbox) -> bool:
        """Settle a paused/pausing/resuming row after a restart; ``False`` = the sandbox is lost."""
        if row.state == PAUSED and row.pause_hot:
            return await self._recover_hot(row)
        recovery = await self.runtime.recover_pause(row.id)
        if recovery.outcome == "running" and recovery.ip:
            try:
                await self.envd.wait_healthy(recovery.ip)
            except Exception:
                return False
            await self.network.apply(recovery.ip, row.allow_internet_access, row.network)
            self.lifecycle.settle_running(row, recovery.ip)
            log.warning("interrupted pause/resume settled as running", sandbox_id=row.id)
            return True
        if recovery.outcome == "paused":
            if row.state != PAUSED:
                log.warning("interrupted pause/resume settled as paused", sandbox_id=row.id)
            self.lifecycle.settle_paused(row)
            return True
        return False

    async def _recover_hot(self, row: Sandbox) -> bool:
        """A hot-paused sandbox after a restart: its frozen container outlived the server (kept
        hot, frozen again should a cool-down the crash cut short have thawed it), or a cool-down
        finished its image before the crash (cold now), or it is lost (a host reboot)."""
        if await self.runtime.is_alive(row.id):
            try:
                await self.runtime.hot_pause(row.id)
            except Exception as exc:   # (it was frozen: e.g. CRIU missing since, or a stopped task)
                log.warning("could not check the freeze of a hot-paused sandbox", sandbox_id=row.id, error=str(exc))
            log.info("hot-paused sandbox kept across the restart", sandbox_id=row.id)
            return True
        if (await self.runtime.recover_pause(row.id)).outcome == "paused":
            log.warning("interrupted cool-down settled as a checkpoint", sandbox_id=row.id)
            self.lifecycle.settle_paused(row)
            return True
        return False

    async def remove_orphans(self, known: set[str]) -> None:
        """Paused sandbox dirs without a row (a kill interrupted half-way) are deleted."""
        for sandbox_id in self.runtime.paused_ids():
            if sandbox_id not in known:
                log.warning("removing orphan paused sandbox", sandbox_id=sandbox_id)
                await self.runtime.kill(sandbox_id)

