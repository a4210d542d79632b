"""State the Prime façade shares between its REST routes, its gateway and its background tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import Request

from sandlot.api.prime.envd import EnvdAccess
from sandlot.api.prime.tokens import TokenSigner

if TYPE_CHECKING:  # at run time only a name: sandlot.services imports the orchestrator
    from sandlot.orchestrator.prime_volumes import PrimeVolumes
    from sandlot.services import Services

log = structlog.get_logger("sandlot.prime")


@dataclass
class PrimeContext:
    services: Services
    signer: TokenSigner
    envd: EnvdAccess
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    volumes: PrimeVolumes | None = None
    """Prime's volumes over the engine's (made at first use: ``api/prime/volumes.py``)."""

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``coro`` in the background; keep a reference so it is not collected mid-flight."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("prime background task failed", task=what)

        task = asyncio.get_running_loop().create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            try:
                await task
            except BaseException:
                pass
        await self.envd.aclose()


def prime(request: Request) -> PrimeContext:
    context: PrimeContext = request.app.state.prime
    return context
