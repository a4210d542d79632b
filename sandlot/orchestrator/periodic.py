"""A host-side watcher that runs one check every few seconds for the server's lifetime."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

log = structlog.get_logger("sandlot.periodic")


class Periodic:
    """Runs :meth:`tick` every :attr:`every_s` from :meth:`start` until :meth:`close`. A tick
    that fails is logged and the next one runs: a watcher must outlive any one sandbox's
    oddities."""

    every_s: float = 1.0

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def enabled(self) -> bool:
        """Whether :meth:`start` starts the loop at all (e.g. only over a runtime it knows)."""
        return True

    async def tick(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self.enabled():
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.tick()
            except Exception:
                log.exception("periodic check failed", watcher=type(self).__name__)
