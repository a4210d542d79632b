"""When a hot pause becomes a CRIU checkpoint ("cools down"): the policy beside :meth:`Pauser.cool`.

A hot pause (``pausing.py``) keeps the sandbox's memory in RAM in a frozen container: resume
is a thaw, milliseconds, but the memory is still the host's to hold. Every tick this watcher
cools the hot pauses that are

- older than ``settings.hot_pause_s`` (a pause that lasts is probably not coming back soon);
- any, oldest first, while the host is short of memory: ``MemAvailable`` in ``/proc/meminfo``
  below ``settings.hot_pause_min_available_mb`` (the kernel's own estimate of what can be
  allocated without swapping, page cache it can drop included: one number, no tuning);
- all of them when hot pauses are off (``hot_pause_s = 0`` at a restart) or under
  ``sandlot node`` (other nodes must be able to resume from the blob store).

It also reports hot pauses whose frozen container died (nothing else watches paused
sandboxes' containers) as lost. A cool-down that fails (disk full, CRIU) leaves the
sandbox hot; it is retried after :data:`RETRY_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from sandlot.orchestrator.lifecycle import Lifecycle
from sandlot.orchestrator.pausing import Pauser
from sandlot.orchestrator.periodic import Periodic
from sandlot.runtime.base import Runtime
from sandlot.settings import Settings
from sandlot.store import sandboxes as sandbox_store
from sandlot.store.database import Database

log = structlog.get_logger("sandlot.cooling")

RETRY_S = 60.0
"""A failed cool-down is tried again after this long (not every tick: each try freezes nothing
new but costs a CRIU run and a log line)."""


def mem_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's ``MemAvailable`` estimate; ``None`` when it can't be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Cooler(Periodic):
    every_s = 2.0

    def __init__(self, settings: Settings, db: Database, runtime: Runtime, lifecycle: Lifecycle, pauser: Pauser,
                 scope: str | None) -> None:
        super().__init__()
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.lifecycle = lifecycle
        self.pauser = pauser
        self.scope = scope
        self.available: Callable[[], int | None] = mem_available_bytes
        """The host's available memory in bytes (a test replaces it)."""
        self._retry_at: dict[str, float] = {}
        self._busy = asyncio.Lock()
        self._closing = False

    def short_of_memory(self) -> bool:
        available = self.available()
        return available is not None and available < self.settings.hot_pause_min_available_mb * 2**20

    def _always(self) -> bool:
        return self.settings.hot_pause_s <= 0 or self.settings.role == "node"

    async def close(self) -> None:
        """Let a cool-down in progress finish (a CRIU dump cut short would leave its sandbox to
        the next start's recovery), then stop."""
        self._closing = True
        async with self._busy:
            pass
        await super().close()

    async def tick(self) -> None:
        async with self._busy:
            await self._tick()

    async def _tick(self) -> None:
        with self.db.session() as session:
            hot = [(row.id, row.paused_at) for row in sandbox_store.hot_paused(session, self.scope)]
        if not hot:
            self._retry_at.clear()
            return
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.settings.hot_pause_s)
        for sandbox_id, paused_at in hot:   # oldest first
            if self._closing:
                return
            if self.lifecycle.lock(sandbox_id).locked():   # a resume or kill is at work on it
                continue
            due = self._always() or paused_at is None or paused_at <= cutoff or self.short_of_memory()
            if not due:
                if not await self.runtime.is_alive(sandbox_id):   # reported lost by the cool-down
                    await self.pauser.cool(sandbox_id)
                continue
            if self._retry_at.get(sandbox_id, 0.0) > time.monotonic():
                continue
            try:
                await self.pauser.cool(sandbox_id)
                self._retry_at.pop(sandbox_id, None)
            except Exception as exc:
                self._retry_at[sandbox_id] = time.monotonic() + RETRY_S
                log.error("cooling a hot pause failed; it stays hot, retried later", sandbox_id=sandbox_id,
                          error=str(exc)[:500], retry_s=RETRY_S)
