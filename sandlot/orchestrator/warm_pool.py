"""Pre-started sandboxes, so ``create`` costs an ``/init`` call instead of envd's start-up.

envd's Python start-up (~300 ms) dominates a cold create. For the builds people
actually use, a few sandboxes are kept booted with envd up but no identity: no
env vars, and an access token nobody but this pool knows. Claiming one hands it its
identity through envd's ``POST /init`` (the same call E2B's orchestrator makes) and
the pool refills in the background, off the request path.

Credentials come before reachability: an identity-less sandbox boots with its build's
*boot token* (an HMAC of the build id under a key in the data dir, so post-ready
snapshots, which carry it in envd's memory, can still be claimed after a restart), and
once ready the pool replaces it with a random token of its own, so the boot token a
claimed sandbox can read from its own environment opens no other pooled sandbox. No
pooled sandbox is ever routed by the front door (it has no store row). Builds with a post-ready memory snapshot are
filled by restoring it (``ready_snapshots``) rather than booting and running the
start command. Pooled sandboxes have no store row, so a restarted server treats
them as orphans and removes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from sandlot import ids
from sandlot.secret_keys import data_dir_key
from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.runtime.base import Runtime, SandboxHandle, SandboxSpec
from sandlot.store.models import Build

log = structlog.get_logger("sandlot.warm_pool")

SpecFactory = Callable[[str, Build], SandboxSpec]
"""Builds the runtime spec of an identity-less sandbox of a build (id given)."""

Prepare = Callable[[SandboxHandle, Build], Awaitable[None]]
"""Runs once envd is up, e.g. the template's start command, so claims skip it."""

Restore = Callable[[Build, str], Awaitable[SandboxHandle | None]]
"""A prepared sandbox of a build (id given) from a snapshot, or ``None`` to boot one instead."""


KEY_FILE = "warm-pool.key"

REFILL_DELAY_S = 0.2
"""A refill boot starts this long after it was asked for (by the claim of the sandbox it
replaces): the claim's /init and the caller's first commands right after ``create`` (the common
agent pattern) don't share the CPU with the boot's runc and envd start-up. Boots also run at the
a lower CPU weight until claimed (``SandboxSpec.background``)."""


def load_key(data_dir: Path) -> bytes:
    """The boot-token key, created once (0600) and shared by every server on this data dir."""
    return data_dir_key(data_dir, KEY_FILE)


class BootTokens:
    """The envd access token identity-less sandboxes of a build boot with (see the module doc)."""

    def __init__(self, data_dir: Path | None) -> None:
        self._data_dir = data_dir
        self._key: bytes | None = None

    def boot_token(self, build: Build) -> str:
        if self._key is None:
            self._key = load_key(self._data_dir) if self._data_dir is not None else secrets.token_bytes(32)
        return hmac.new(self._key, f"boot:{build.id}".encode(), hashlib.sha256).hexdigest()


@dataclass
class _BuildPool:
    build: Build
    ready: list[SandboxHandle] = field(default_factory=list)
    filling: int = 0


class WarmPool:
    def __init__(
        self,
        runtime: Runtime,
        envd: EnvdAgent,
        tokens: BootTokens,
        spec_for: SpecFactory,
        prepare: Prepare | None = None,
        restore: Restore | None = None,
        *,
        size: int,
        max_builds: int = 4,
    ) -> None:
        self.runtime = runtime
        self.envd = envd
        self.tokens = tokens
        self.spec_for = spec_for
        self.prepare = prepare
        self.restore = restore
        self.size = size
        self.max_builds = max_builds
        self.ensure_layers: Callable[[Build], Awaitable[object]] | None = None
        """Set by the manager: a build's layers onto this host before a boot (``sandlot node``)."""
        self._tokens: dict[str, str] = {}
        """Current envd token of each pooled sandbox (after ``_rotate``), until claimed."""
        self._pools: OrderedDict[str, _BuildPool] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def token_of(self, handle: SandboxHandle, build: Build) -> str:
        """What ``handle``'s envd wants in ``X-Access-Token`` before it is claimed."""
        return self._tokens.get(handle.sandbox_id) or self.tokens.boot_token(build)

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
                    self._spawn(self.discard(handle))
        self._pools.move_to_end(build.id)
        self._refill(pool)

    def claim(self, build: Build) -> SandboxHandle | None:
        """A booted, identity-less sandbox of ``build``, or ``None`` when none is ready."""
        pool = self._pools.get(build.id)
        if pool is None or not pool.ready:
            return None
        handle = pool.ready.pop(0)
        self._refill(pool)   # its boot waits REFILL_DELAY_S first: off this claim's own path
        return handle

    async def initialize(self, handle: SandboxHandle, build: Build, init: dict[str, object]) -> None:
        """Give a claimed (or snapshot-restored) sandbox its identity (access token, env vars,
        default user), authenticated with the token it has until now."""
        self.runtime.foreground(handle.sandbox_id)
        await self.envd.init(handle.ip, self.token_of(handle, build), init)
        self._tokens.pop(handle.sandbox_id, None)

    async def _rotate(self, handle: SandboxHandle, build: Build) -> None:
        """Boot token → a random token of this sandbox alone (see the module docstring)."""
        token = secrets.token_hex(32)
        await self.envd.init(handle.ip, self.tokens.boot_token(build), {"accessToken": token})
        self._tokens[handle.sandbox_id] = token

    def _refill(self, pool: _BuildPool) -> None:
        missing = self.size - len(pool.ready) - pool.filling
        for _ in range(max(0, missing)):
            pool.filling += 1
            self._spawn(self._boot(pool))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _boot(self, pool: _BuildPool) -> None:
        sandbox_id = ids.new_sandbox_id()
        try:
            await asyncio.sleep(REFILL_DELAY_S)
            restored = await self.restore(pool.build, sandbox_id) if self.restore is not None else None
            if restored is None and self.ensure_layers is not None:
                await self.ensure_layers(pool.build)
            handle = restored or await self.runtime.create(
                dataclasses.replace(self.spec_for(sandbox_id, pool.build), background=True))
            try:
                if restored is None:
                    await self.envd.wait_healthy(handle.ip)
                    if self.prepare is not None:
                        await self.prepare(handle, pool.build)
                await self._rotate(handle, pool.build)
            except BaseException:
                self._tokens.pop(sandbox_id, None)
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
            await self.discard(handle)
            return
        pool.ready.append(handle)

    async def discard(self, handle: SandboxHandle) -> None:
        """Remove a pooled (or just claimed) sandbox and forget its token."""
        self._tokens.pop(handle.sandbox_id, None)
        try:
            await self.runtime.kill(handle.sandbox_id)
        except Exception as exc:
            log.warning("failed to remove warm sandbox", sandbox_id=handle.sandbox_id, error=repr(exc))

    async def drop(self, build_ids: set[str]) -> None:
        """Stop keeping sandboxes of these builds (their template is gone); boots in flight
        discard themselves when they find their pool gone."""
        dropped = [self._pools.pop(build_id) for build_id in build_ids if build_id in self._pools]
        await asyncio.gather(*(self.discard(h) for pool in dropped for h in pool.ready))

    async def settled(self) -> None:
        """Wait for the boots in flight (tests)."""
        await asyncio.gather(*list(self._tasks))

    def depth(self) -> list[tuple[str, str, int, int]]:
        """(template id, build id, ready, booting) of each build kept warm (``/metrics``, status)."""
        return [(p.build.template_id, p.build.id, len(p.ready), p.filling) for p in list(self._pools.values())]

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
        await asyncio.gather(*(self.discard(h) for h in handles))
