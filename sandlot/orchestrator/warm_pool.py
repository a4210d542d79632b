"""Pre-started sandboxes, so ``create`` costs an ``/init`` call instead of envd's start-up.

envd's Python start-up (~300 ms) dominates a cold create. For the builds people
actually use, a few sandboxes are kept booted with envd up but no identity: no
access token, no env vars. Claiming one hands it its identity through envd's
``POST /init`` (the same call E2B's orchestrator makes) and the pool refills in
the background, off the request path. Builds with a post-ready memory snapshot are
filled by restoring it (``ready_snapshots``) rather than booting and running the
start command. Pooled sandboxes have no store row, so a restarted server treats
them as orphans and removes them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import structlog

from sandlot import ids
from sandlot.orchestrator.envd_client import wait_healthy
from sandlot.runtime.base import Runtime, SandboxHandle, SandboxSpec
from sandlot.store.models import Build

log = structlog.get_logger("sandlot.warm_pool")

SpecFactory = Callable[[str, Build], SandboxSpec]
"""Builds the runtime spec of an identity-less sandbox of a build (id given)."""

Prepare = Callable[[SandboxHandle, Build], Awaitable[None]]
"""Runs once envd is up, e.g. the template's start command, so claims skip it."""

Restore = Callable[[Build, str], Awaitable[SandboxHandle | None]]
"""A prepared sandbox of a build (id given) from a snapshot, or ``None`` to boot one instead."""


@dataclass
class _BuildPool:
    build: Build
    ready: list[SandboxHandle] = field(default_factory=list)
    filling: int = 0


class WarmPool:
    def __init__(
        self,
        runtime: Runtime,
        http: httpx.AsyncClient,
        spec_for: SpecFactory,
        prepare: Prepare | None = None,
        restore: Restore | None = None,
        *,
        size: int,
        max_builds: int = 4,
        envd_port: int = 49983,
        envd_timeout_s: float = 20.0,
    ) -> None:
        self.runtime = runtime
        self.http = http
        self.spec_for = spec_for
        self.prepare = prepare
        self.restore = restore
        self.size = size
        self.max_builds = max_builds
        self.envd_port = envd_port
        self.envd_timeout_s = envd_timeout_s
        self._pools: OrderedDict[str, _BuildPool] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def want(self, build: Build) -> None:
        """Keep ``size`` sandboxes of ``build`` warm (least recently wanted builds drop out)."""
        if self.size <= 0 or self._closed:
            return
        pool = self._pools.get(build.id)
        if pool is None:
            pool = self._pools[build.id] = _BuildPool(build)
            while len(self._pools) > self.max_builds:
                _, evicted = self._pools.popitem(last=False)
                for handle in evicted.ready:
                    self._spawn(self._discard(handle))
        self._pools.move_to_end(build.id)
        self._refill(pool)

    def claim(self, build: Build) -> SandboxHandle | None:
        """A booted, identity-less sandbox of ``build``, or ``None`` when none is ready."""
        pool = self._pools.get(build.id)
        if pool is None or not pool.ready:
            return None
        handle = pool.ready.pop(0)
        self._refill(pool)
        return handle

    async def initialize(self, handle: SandboxHandle, init: dict[str, object]) -> None:
        """Give a claimed sandbox its identity (access token, env vars, default user)."""
        response = await self.http.post(f"http://{handle.ip}:{self.envd_port}/init", json=init, timeout=10)
        if response.status_code >= 300:
            raise RuntimeError(f"envd /init answered {response.status_code}: {response.text[:200]}")

    def _refill(self, pool: _BuildPool) -> None:
        missing = self.size - len(pool.ready) - pool.filling
        for _ in range(max(0, missing)):
            pool.filling += 1
            self._spawn(self._boot(pool))

    def _spawn(self, coro: "asyncio.Future[None] | object") -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _boot(self, pool: _BuildPool) -> None:
        sandbox_id = ids.new_sandbox_id()
        try:
            restored = await self.restore(pool.build, sandbox_id) if self.restore is not None else None
            handle = restored or await self.runtime.create(self.spec_for(sandbox_id, pool.build))
            try:
                if restored is None:
                    await wait_healthy(self.http, handle.ip, self.envd_port, self.envd_timeout_s)
                    if self.prepare is not None:
                        await self.prepare(handle, pool.build)
            except BaseException:
                await self.runtime.kill(sandbox_id)
                raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("warm sandbox failed to boot", build_id=pool.build.id, error=repr(exc))
            return
        finally:
            pool.filling -= 1
        if self._closed or self._pools.get(pool.build.id) is not pool:
            await self._discard(handle)
            return
        pool.ready.append(handle)

    async def _discard(self, handle: SandboxHandle) -> None:
        try:
            await self.runtime.kill(handle.sandbox_id)
        except Exception as exc:
            log.warning("failed to remove warm sandbox", sandbox_id=handle.sandbox_id, error=repr(exc))

    async def drop(self, build_ids: set[str]) -> None:
        """Stop keeping sandboxes of these builds (their template is gone); boots in flight
        discard themselves when they find their pool gone."""
        dropped = [self._pools.pop(build_id) for build_id in build_ids if build_id in self._pools]
        await asyncio.gather(*(self._discard(h) for pool in dropped for h in pool.ready))

    def pooled_ids(self) -> set[str]:
        return {h.sandbox_id for p in self._pools.values() for h in p.ready}

    async def close(self) -> None:
        """Stop filling and remove every idle pooled sandbox."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        handles = [h for p in self._pools.values() for h in p.ready]
        self._pools.clear()
        await asyncio.gather(*(self._discard(h) for h in handles))
