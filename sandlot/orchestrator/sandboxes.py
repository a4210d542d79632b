"""The orchestrator's face: create, find, extend and kill sandboxes; expire them; recover them.

``SandboxManager`` wires the parts (each with explicit dependencies, none reaching into
another): :class:`Lifecycle` owns state, :class:`Boot` how a sandbox comes up,
:class:`NetworkPolicies` egress, :class:`WarmPool` and :class:`ReadySnapshots` the fast
paths, :class:`Pauser` and :class:`Snapshots` the checkpoint operations. Team ownership is
checked here, once, for every operation the API asks for. It implements the front door's
:class:`~sandlot.proxy.routes.RouteTable`.

The store row is written *before* the container exists (state ``creating``) so a
crash half-way is found and cleaned at the next start; any failure during
create tears down whatever the runtime made.
"""

from __future__ import annotations

from typing import Any

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import structlog

from sandlot import ids
from sandlot.orchestrator.adoption import Adoption
from sandlot.orchestrator.snapshot_images import SnapshotImages
from sandlot.orchestrator.boot import Boot, envd_init
from sandlot.orchestrator.cooling import Cooler
from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.orchestrator.errors import Conflict, InvalidRequest, OperationFailed, SandboxNotFound
from sandlot.orchestrator.events import EventLog
from sandlot.orchestrator.lifecycle import KILLING, PAUSED, PAUSING, RESUMING, RUNNING, Lifecycle
from sandlot.orchestrator.lifecycle_events import LifecycleEvents
from sandlot.orchestrator.metrics import MetricsSampler
from sandlot.egress.config import needs_proxy
from sandlot.orchestrator.network import NetworkPolicies
from sandlot.orchestrator.nodes import NodeRegistry
from sandlot.orchestrator.pausing import Pauser
from sandlot.orchestrator.ready_snapshots import ReadySnapshots
from sandlot.orchestrator.requests import ENVD_VERSION, CloneRequest, CreateRequest, EnvdLauncher
from sandlot.orchestrator.snapshots import Snapshots
from sandlot.orchestrator.volumes import Volumes
from sandlot.orchestrator.warm_pool import BootTokens, WarmPool
from sandlot.proxy.routes import PauseHook, Route
from sandlot.quotas import QuotaExceeded
from sandlot.runtime import lxcfs
from sandlot.runtime.base import Runtime, SandboxHandle
from sandlot.runtime.egress import EgressPolicy
from sandlot.settings import Settings
from sandlot.store import sandboxes as sandbox_store
from sandlot.store import templates as template_store
from sandlot.store.database import Database
from sandlot.store.models import Build, Sandbox, Snapshot

log = structlog.get_logger("sandlot.orchestrator")


class Spans:
    """Milliseconds since a create began at each of its steps, logged with it (issue 14's profile)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.ms: dict[str, float] = {}

    def __call__(self, step: str) -> None:
        self.ms[step] = round((time.perf_counter() - self.t0) * 1000, 2)

class SandboxManager:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, envd_launch: EnvdLauncher,
                 envd: EnvdAgent | None = None) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.envd = envd or EnvdAgent(settings.envd_port, settings.envd_start_timeout_s,
                                      settings.build_ready_timeout_s)
        self.metrics = MetricsSampler(runtime)
        self.events = EventLog(settings.data_dir / "logs" / settings.instance)
        self.lifecycle = Lifecycle(settings, db, self.metrics, self.events)
        self.network = NetworkPolicies(settings, runtime, db)
        tokens = BootTokens(settings.data_dir)
        self.boot = Boot(settings, self.envd, envd_launch, tokens)
        self.ready_snapshots = ReadySnapshots(settings, db, runtime, self.envd, self.boot)
        self.pool = WarmPool(runtime, self.envd, tokens, self.boot.warm_spec, self.boot.prepare,
                             self.ready_snapshots.restore, size=settings.warm_pool_size)
        self.pausing = Pauser(settings, db, runtime, self.lifecycle, self.envd, self.network, self.boot)
        self.snapshots = Snapshots(settings, db, runtime, self.lifecycle, self.envd, self.network, self.pausing)
        self.death_hooks: list[Callable[[str, str], None]] = []
        """Called with (sandbox id, ``"oom"`` or ``"exited"``) when a container died on its own."""
        self.lifecycle_events = LifecycleEvents(settings, db)   # E2B's /events and webhooks
        self.lifecycle.transitions.append(self.lifecycle_events.on_transition)
        self.network.execution_of = self.lifecycle_events.current_execution
        self.volumes = Volumes(settings, db, lambda: runtime.userns)   # E2B volumes (issue 15)
        self.lifecycle.transitions.append(self.volumes.on_transition)   # the last user unmounts
        self.pausing.mount_volumes = self.snapshots.mount_volumes = self.volumes.acquire
        self.death_hooks.append(self.lifecycle_events.died)
        self.nodes = NodeRegistry(settings, db)   # this server as the registry's one node (issue 17)
        self.lifecycle.node_id = self.nodes.node_id
        self.scope = self.nodes.node_id if settings.role == "node" else None
        """Rows this server recovers and reaps: its own under ``sandlot node``, all of them on a single box."""
        self.cooler = Cooler(settings, db, runtime, self.lifecycle, self.pausing, self.scope)   # hot pauses → CRIU
        self.pausing.cooled_hooks.append(self.volumes.released_by)
        if settings.role == "node":   # layers and pause images of other nodes, through the blob store
            self.pool.ensure_layers = self.boot.ensure_layers
            adoption = Adoption(settings, db, runtime, self.boot, self.network, self.nodes.node_id)
            self.pausing.published, self.pausing.adopt = adoption.publish, adoption.adopt
            self.snapshots.images = SnapshotImages(settings, db, self.boot, self.nodes.node_id)
        self._reaper: asyncio.Task[None] | None = None
        self._teardowns: set[asyncio.Task[None]] = set()
        """Kills answered before their teardown finished (``destroy(background=True)``)."""

    # --- the front door's route table ---------------------------------------------------------

    def route(self, sandbox_id: str) -> Route | None:
        return self.lifecycle.route(sandbox_id)

    def signing_tokens(self) -> list[tuple[str, str]]:
        return self.lifecycle.signing_tokens()

    async def wake(self, sandbox_id: str) -> Route | None:
        return await self.pausing.auto_resume(sandbox_id)

    def on_pause(self, hook: PauseHook) -> None:
        self.lifecycle.on_pause(hook)

    # --- ownership ------------------------------------------------------------------------------

    def owned(self, team_id: str, sandbox_id: str) -> Sandbox:
        """The team's sandbox; :class:`SandboxNotFound` for none and for another team's."""
        with self.db.session() as session:
            row = sandbox_store.get_for_team(session, team_id, sandbox_id)
        if row is None or not self.holds(row):
            raise SandboxNotFound(sandbox_id)
        return row

    def holds(self, row: Sandbox) -> bool:
        """Whether this server may act on ``row``: on a single box, always; a node, on its own
        sandboxes and on paused ones whose images it can adopt (docs/scale-out.md) — never on a
        running sandbox of another host, even if a request reaches the wrong node."""
        return self.scope is None or row.node_id in (None, self.scope) or row.state == PAUSED

    # --- create ---------------------------------------------------------------------------------

    def egress_policy(self, allow_internet_access: bool | None, network: dict[str, Any] | None) -> EgressPolicy:
        """Validated policy (:class:`InvalidRequest` when invalid or unsupported by the runtime)."""
        return self.network.policy(allow_internet_access, network, check_identity=True)

    async def create(self, request: CreateRequest) -> Sandbox:
        """``QuotaExceeded`` when the team already runs its limit of sandboxes (``quotas``);
        ``NoNodeAvailable`` while this node is drained."""
        self.nodes.admit()
        mark = Spans()
        now = datetime.now(timezone.utc)
        row = Sandbox(
            id=request.sandbox_id or ids.new_sandbox_id(),
            team_id=request.team_id,
            template_id=request.template.id,
            build_id=request.build.id,
            alias=request.alias,
            started_at=now,
            end_at=now + timedelta(seconds=request.timeout_s),
            cpu_count=request.build.cpu_count,
            memory_mb=request.build.memory_mb,
            disk_mb=request.build.disk_mb,
            envd_version=ENVD_VERSION,
            envd_access_token=ids.new_access_token(),
            metadata_=request.metadata,
            env_vars=request.env_vars,
            auto_pause=request.auto_pause,
            auto_resume=request.auto_resume,
            pause_memory=request.pause_memory,
            allow_internet_access=request.allow_internet_access,
            network=request.network,
            volume_mounts=request.volume_mounts,
        )
        # a sandbox with volumes boots with their binds: never a pooled or pre-restored one
        fast = request.sandbox_id is None and not request.volume_mounts
        if fast:
            created = await self._create_claimed(row, request, mark)
            if created is not None:
                return created
        warm = self.lifecycle.admit(row, reserved_id=request.sandbox_id)
        mark("admit")
        sandbox_id = row.id
        restored: SandboxHandle | None = None
        try:
            async with self.lifecycle.lock(sandbox_id):
                # none in the warm pool: restored from the template's post-ready snapshot, which
                # is identity-less like a pooled sandbox and gets its identity through /init
                if warm is None and not request.volume_mounts:
                    restored = await self.ready_snapshots.restore(request.build, sandbox_id)
                handle = warm or restored
                mark("claim")
                booted = handle is None
                if handle is None:
                    await self.boot.ensure_layers(request.build)   # (another node's build: fetched first)
                    spec = self.boot.spec(row, request.build)
                    if request.volume_mounts:
                        await self.volumes.acquire(request.volume_mounts)
                        spec.mounts += self.volumes.bind_mounts(request.volume_mounts)
                    handle = await self.runtime.create(spec)
                    mark("runtime")
                try:
                    # the policy first: a pooled or restored sandbox's processes get the
                    # user's identity and env vars (secrets) only once it is in force
                    await self.network.apply(handle.ip, request.allow_internet_access, request.network)
                    mark("policy")
                    if not booted:
                        await self.pool.initialize(handle, request.build, envd_init(row, request.build))
                        mark("init")
                    if self.settings.failpoint("create-after-runtime"):
                        raise RuntimeError("injected failure after the container was created")
                    if booted:
                        await self.envd.wait_healthy(handle.ip)
                        mark("envd")
                        if request.build.start_cmd or request.build.ready_cmd:  # template start command (issue 6)
                            await self.boot.start_command(row, request.build, handle.ip)
                except BaseException:
                    await self.network.clear(handle.ip)
                    await self.runtime.kill(sandbox_id)
                    raise
        except BaseException as exc:
            self.lifecycle.abandon(sandbox_id, exc, "Failed to create sandbox")
            raise
        row = self.lifecycle.activate(sandbox_id, handle, request.timeout_s, spawned_from=request.template.id)
        mark("activate")
        self.events.record(sandbox_id, "sandbox created", template=request.template.id, ip=handle.ip,
                           warm=warm is not None, restored=restored is not None)
        self.pool.want(request.build)
        mark("done")
        log.info("sandbox created", sandbox_id=sandbox_id, template=request.template.id, ip=handle.ip,
                 warm=warm is not None, restored=restored is not None, ms=mark.ms)
        return row

    async def _create_claimed(self, row: Sandbox, request: CreateRequest,
                              mark: Spans) -> Sandbox | None:
        """A create served by the warm pool, or ``None`` when it has no live sandbox of the build.

        Costs one store write: the pooled sandbox runs before it has a row, so its row is
        inserted as ``running`` (quota checked in the same transaction) once envd has its
        identity. A crash before that leaves a container without a row, which the next start
        removes as an orphan, as it does pooled ones. A read-only quota look comes first, so a
        team at its limit gets its 429 without using up a pooled sandbox."""
        self.lifecycle.check_quota(row.team_id)
        warm = self.pool.claim(request.build)
        if warm is None:
            return None
        mark("claim")
        if not await self.runtime.is_alive(warm.sandbox_id):
            # nothing watches pooled sandboxes: one that died (its start command's OOM, envd
            # crashed) is removed here and the create boots instead
            log.warning("claimed warm sandbox was dead; booting instead", sandbox_id=warm.sandbox_id)
            await self.pool.discard(warm)
            return None
        row.id = warm.sandbox_id
        try:
            # the policy first: the pooled sandbox's processes get the user's identity and env
            # vars (secrets) only once it is in force
            await self.network.apply(warm.ip, request.allow_internet_access, request.network)
            mark("policy")
            await self.pool.initialize(warm, request.build, envd_init(row, request.build))
            mark("init")
            if self.settings.failpoint("create-after-runtime"):
                raise RuntimeError("injected failure after the container was created")
            row = self.lifecycle.admit_running(row, warm, request.timeout_s, spawned_from=request.template.id)
            mark("activate")
        except BaseException as exc:
            await self.network.clear(warm.ip)
            await self.runtime.kill(warm.sandbox_id)
            if isinstance(exc, Exception) and not isinstance(exc, QuotaExceeded):
                log.error("failed to create sandbox", sandbox_id=warm.sandbox_id, error=repr(exc))
                raise OperationFailed(f"Failed to create sandbox: {exc}") from exc
            raise
        self.events.record(row.id, "sandbox created", template=request.template.id, ip=warm.ip, warm=True,
                           restored=False)
        self.pool.want(request.build)
        mark("done")
        log.info("sandbox created", sandbox_id=row.id, template=request.template.id, ip=warm.ip, warm=True,
                 restored=False, ms=mark.ms)
        return row

    # --- pause, resume, snapshots, forks (team-checked) -----------------------------------------

    async def pause(self, team_id: str, sandbox_id: str, memory: bool | None = None, *, strict: bool = False) -> None:
        self.owned(team_id, sandbox_id)
        await self.pausing.pause(sandbox_id, memory, strict=strict)

    async def resume(self, team_id: str, sandbox_id: str, timeout_s: int, *,
                     memory: bool = True) -> tuple[Sandbox, bool]:
        """Resume a paused sandbox (``True``; ``memory=False``: cold-boot it from disk) or extend a
        running one (``False``)."""
        row = self.owned(team_id, sandbox_id)
        if row.state == RUNNING:
            return await self.keep_alive(team_id, sandbox_id, timeout_s), False
        return await self.pausing.resume(sandbox_id, timeout_s, memory=memory)

    async def snapshot(self, team_id: str, sandbox_id: str, name: str | None, memory: bool = True) -> Snapshot:
        row = self.owned(team_id, sandbox_id)
        snap = await self.snapshots.create(team_id, sandbox_id, name, memory)
        self.lifecycle_events.checkpointed(row)
        return snap

    async def start_from(self, snap: Snapshot, request: CloneRequest) -> Sandbox:
        self.nodes.admit()
        return await self.snapshots.start_from(snap, request)

    async def fork(self, team_id: str, sandbox_id: str, count: int, timeout_s: int) -> list[Sandbox | Exception]:
        self.owned(team_id, sandbox_id)
        self.nodes.admit()
        return await self.snapshots.fork(team_id, sandbox_id, count, timeout_s)

    # --- timeouts -------------------------------------------------------------------------------

    def _checked_end(self, row: Sandbox, timeout_s: int) -> datetime:
        end = datetime.now(timezone.utc) + timedelta(seconds=timeout_s)
        limit = row.started_at + timedelta(seconds=self.settings.max_lifetime_s)
        if end > limit:
            raise InvalidRequest(f"Max instance length exceeded: a sandbox may live at most "
                                 f"{self.settings.max_lifetime_s} s")
        return end

    async def set_timeout(self, team_id: str, sandbox_id: str, timeout_s: int) -> None:
        """Set the end time to now + timeout (may shorten), as E2B's ``POST /timeout``."""
        with self.db.session() as session, session.begin():
            row = sandbox_store.get_for_team(session, team_id, sandbox_id)
            if row is None:
                raise SandboxNotFound(sandbox_id)
            row.end_at = self._checked_end(row, timeout_s)
        self.lifecycle_events.updated(row, set_timeout=row.end_at)

    async def keep_alive(self, team_id: str, sandbox_id: str, timeout_s: int) -> Sandbox:
        """Extend (never shorten) the end time, as E2B's connect and refresh do."""
        with self.db.session() as session, session.begin():
            row = sandbox_store.get_for_team(session, team_id, sandbox_id)
            if row is None:
                raise SandboxNotFound(sandbox_id)
            if row.state != RUNNING:
                raise Conflict(f"Sandbox \"{sandbox_id}\" is {row.state}")
            end = self._checked_end(row, timeout_s)
            if end > row.end_at:
                row.end_at = end
            return row

    # --- network --------------------------------------------------------------------------------

    async def update_network(self, team_id: str, sandbox_id: str, allow_internet_access: bool | None,
                             egress: dict[str, Any]) -> None:
        """E2B's ``PUT /sandboxes/{id}/network``: replace the egress rules of a running sandbox.

        Omitted fields are cleared; ingress settings (public traffic, host mask) are kept."""
        self.owned(team_id, sandbox_id)   # before the lock: no lock is made for ids that don't exist
        async with self.lifecycle.lock(sandbox_id):
            row = self.owned(team_id, sandbox_id)
            if row.state != RUNNING or not row.ip:
                raise Conflict(f"Sandbox \"{sandbox_id}\" is {row.state}")
            kept = ("allowPublicTraffic", "maskRequestHost", "httpsPorts", "iam")   # iam: defined at create only
            network = {k: v for k, v in (row.network or {}).items() if k in kept}
            network.update({k: v for k, v in egress.items() if v is not None})
            self.network.policy(allow_internet_access, network, check_identity=True)   # validate before any change
            await self.network.apply(row.ip, allow_internet_access, network)
            with self.db.session() as session, session.begin():
                fresh = session.get(Sandbox, sandbox_id)
                if fresh is not None:
                    fresh.network = network
                    fresh.allow_internet_access = allow_internet_access
            if fresh is not None:
                self.lifecycle_events.updated(fresh, network=network)
                if needs_proxy(row.network)[0] != needs_proxy(network)[0]:
                    await self._refresh_ca_env(fresh)

    async def _refresh_ca_env(self, row: Sandbox) -> None:
        """Rules were added or removed: new processes get (or lose) the variables that point
        tools at the egress CA (``boot.envd_init``); running ones keep their environment."""
        with self.db.session() as session:
            build = session.get(Build, row.build_id)
        if build is None or not row.ip:
            return
        try:
            await self.boot.reidentify(row, build, row.ip)
        except Exception as exc:   # the rules are in force either way; only the env vars lag
            log.warning("could not update the sandbox's CA environment", sandbox_id=row.id, error=repr(exc))

    # --- kill -----------------------------------------------------------------------------------

    async def kill(self, team_id: str, sandbox_id: str) -> bool:
        """E2B's kill: answered once the sandbox is unroutable and its processes are dead; the
        rest of the teardown goes on in the background (``destroy(background=True)``)."""
        try:
            self.owned(team_id, sandbox_id)
        except SandboxNotFound:
            return False
        await self.destroy(sandbox_id, background=True)
        return True

    async def destroy(self, sandbox_id: str, *, only_if: Callable[[Sandbox], bool] | None = None,
                      background: bool = False) -> None:
        """Remove a sandbox whatever its state: container, address, image, row. ``only_if`` is
        checked on the current row under the sandbox's lock (the reaper: is it still due?).

        ``background``: return once the sandbox is unrouted (row ``killing``), its egress shut
        and every process of it SIGKILLed; the teardown (runc, mounts, disk, netns, cgroups,
        row) then runs in a task that keeps holding the sandbox's lock. Nothing leaks when
        that task fails or the server dies first: the row stays ``killing`` until the teardown
        is done, and the reaper (``settle_interrupted``) or the next start finishes it."""
        lock = self.lifecycle.lock(sandbox_id)
        await lock.acquire()
        try:
            if only_if is not None and not self._holds(sandbox_id, only_if):
                lock.release()
                return
            ip = self.lifecycle.begin_kill(sandbox_id)
            await self.network.clear(ip)
            if background:
                try:
                    await self.runtime.stop(sandbox_id)
                except Exception:
                    log.exception("could not stop the sandbox; tearing it down now", sandbox_id=sandbox_id)
                    background = False
        except BaseException:
            lock.release()
            raise
        if not background:
            await self._tear_down(sandbox_id, lock)
            return
        task = asyncio.ensure_future(self._tear_down(sandbox_id, lock))
        self._teardowns.add(task)
        task.add_done_callback(self._teardown_done)

    async def _tear_down(self, sandbox_id: str, lock: asyncio.Lock) -> None:
        """The second half of ``destroy``; releases the sandbox's lock (taken by ``destroy``)."""
        try:
            await self.runtime.kill(sandbox_id)
            self.lifecycle.gone(sandbox_id)
        finally:
            lock.release()
        self.lifecycle.release_lock(sandbox_id)
        log.info("sandbox killed", sandbox_id=sandbox_id)

    def _teardown_done(self, task: "asyncio.Task[None]") -> None:
        self._teardowns.discard(task)
        if not task.cancelled() and task.exception() is not None:   # the row stays killing: retried
            log.error("background teardown failed; the reaper retries", error=repr(task.exception()))

    async def settled(self) -> None:
        """Wait for background teardowns in flight (tests; ``close``)."""
        while self._teardowns:
            await asyncio.gather(*list(self._teardowns), return_exceptions=True)

    # --- background work ------------------------------------------------------------------------

    def _holds(self, sandbox_id: str, condition: Callable[[Sandbox], bool]) -> bool:
        with self.db.session() as session:
            row = session.get(Sandbox, sandbox_id)
            return row is not None and condition(row)

    def _due(self, row: Sandbox) -> bool:
        """Whether the reaper must act on the row now: a running sandbox past its end, or a
        paused one past the operator's retention (re-checked under the lock before acting)."""
        now = datetime.now(timezone.utc)
        if row.state == RUNNING:
            return row.end_at <= now
        if row.state == PAUSED and self.settings.paused_ttl_s > 0 and row.paused_at is not None:
            return row.paused_at <= now - timedelta(seconds=self.settings.paused_ttl_s)
        return False

    async def expire_due(self) -> None:
        now = datetime.now(timezone.utc)
        with self.db.session() as session:
            rows = sandbox_store.expired(session, now, self.scope)
            due = [row.id for row in rows]
            to_pause = {row.id for row in rows if row.auto_pause}
            if self.settings.paused_ttl_s > 0:   # the operator's retention for paused sandboxes
                due += [row.id for row in sandbox_store.paused_before(
                    session, now - timedelta(seconds=self.settings.paused_ttl_s), self.scope)]
        for sandbox_id in due:
            try:
                if sandbox_id in to_pause:   # autoPause: pause instead of dying (issue 4)
                    try:
                        await self.pausing.pause(sandbox_id, on_timeout=True, only_if=self._due)
                        continue
                    except (Conflict, SandboxNotFound):
                        continue
                    except Exception as exc:
                        log.error("auto-pause failed; killing the sandbox", sandbox_id=sandbox_id, error=str(exc))
                await self.destroy(sandbox_id, only_if=self._due)
            except Exception:  # keep the reaper alive; the next tick retries
                log.exception("failed to expire sandbox", sandbox_id=sandbox_id)

    async def bury_dead(self) -> None:
        """Remove running sandboxes whose container died on its own (envd killed, OOM, …).

        E2B reports such a sandbox as gone; the death hooks tell the façades why."""
        for sandbox_id, route in self.lifecycle.routed():
            if route.state != RUNNING or self.lifecycle.lock(sandbox_id).locked():
                continue
            if await self.runtime.is_alive(sandbox_id):
                continue
            async with self.lifecycle.lock(sandbox_id):  # a pause or kill may have won the race
                current = self.lifecycle.route(sandbox_id)
                if current is None or current.state != RUNNING or await self.runtime.is_alive(sandbox_id):
                    continue
            reason = "oom" if self.runtime.oom_killed(sandbox_id) else "exited"
            log.warning("sandbox died", sandbox_id=sandbox_id, reason=reason)
            for hook in self.death_hooks:
                try:
                    hook(sandbox_id, reason)
                except Exception:
                    log.exception("death hook failed", sandbox_id=sandbox_id)
            await self.destroy(sandbox_id)

    async def drop_disowned(self) -> None:
        """Under ``sandlot node``: tear down what this node runs but no longer holds. An API
        instance's sweeper reports a node's sandboxes gone when its heartbeats stop reaching the
        store (a partition, a stall); if the node lives on, those containers would run unseen."""
        if self.scope is None:
            return
        routed = dict(self.lifecycle.routed())
        if not routed:
            return
        with self.db.session() as session:
            held = sandbox_store.held_by(session, self.scope, list(routed))
        for sandbox_id, route in routed.items():
            if sandbox_id in held or self.lifecycle.lock(sandbox_id).locked():
                continue
            if self._holds(sandbox_id, lambda row: row.node_id == self.scope):   # created meanwhile
                continue
            log.warning("this node no longer holds the sandbox (reported gone): removing it", sandbox_id=sandbox_id)
            await self.network.clear(route.ip)
            await self.destroy(sandbox_id)

    async def settle_interrupted(self) -> None:
        """Finish what a failed operation left half-way, without waiting for a restart: a pause
        whose sandbox died (``pausing``, no container) and a kill whose runtime call failed
        (``killing``). Both would otherwise hold a quota slot and answer 409 for good."""
        with self.db.session() as session:
            stale = [row.id for row in sandbox_store.in_states(session, (PAUSING, KILLING), self.scope)]
        for sandbox_id in stale:
            lock = self.lifecycle.lock(sandbox_id)
            if lock.locked():   # an operation is still at work on it
                continue
            async with lock:
                with self.db.session() as session, session.begin():
                    row = session.get(Sandbox, sandbox_id)
                    if row is None or row.state not in (PAUSING, KILLING):
                        continue
                    if row.state == PAUSING and await self.pausing.recover(row):
                        continue
            log.warning("settling an interrupted operation: removing the sandbox", sandbox_id=sandbox_id)
            try:
                await self.destroy(sandbox_id)
            except Exception:   # the runtime still fails: the next tick retries
                log.exception("could not remove the sandbox", sandbox_id=sandbox_id)

    async def _reap_forever(self, interval_s: float = 0.5, liveness_every: int = 4) -> None:
        tick = 0
        while True:
            await asyncio.sleep(interval_s)
            tick += 1
            try:
                await self.expire_due()
                if tick % liveness_every == 0:
                    await self.drop_disowned()
                    await self.bury_dead()
                    await self.settle_interrupted()
            except Exception:
                log.exception("reaper tick failed")

    async def recover(self) -> None:
        """Match the store against the containers that survived a restart.

        Rows whose container is gone are dropped; containers without a row
        (a create that crashed half-way) are torn down.
        """
        handles = {h.sandbox_id: h for h in await self.runtime.list()}
        with self.db.session() as session, session.begin():
            for row in sandbox_store.all_live(session, self.scope):
                handle = handles.pop(row.id, None)
                if row.state in (PAUSED, PAUSING, RESUMING):   # issue 4: settle pauses
                    if await self.pausing.recover(row):
                        continue
                    await self.runtime.kill(row.id)
                    log.warning("dropping paused sandbox lost across restart", sandbox_id=row.id, state=row.state)
                    self.lifecycle.lost(session, row)
                    continue
                if row.state == RUNNING and handle is not None and await self.runtime.is_alive(row.id):
                    if await self.runtime.thaw_if_frozen(row.id):
                        log.warning("thawed a sandbox a killed server left frozen", sandbox_id=row.id)
                    try:   # the nft table was rebuilt at start: policies come back from the store
                        await self.network.apply(handle.ip, row.allow_internet_access, row.network)
                    except Exception:
                        log.exception("could not restore network policy; killing sandbox", sandbox_id=row.id)
                        await self.runtime.kill(row.id)
                        self.lifecycle.lost(session, row)
                        continue
                    self.lifecycle.readopt(row, handle.ip)
                    continue
                if handle is not None:
                    await self.runtime.kill(row.id)
                log.warning("dropping sandbox lost across restart", sandbox_id=row.id, state=row.state)
                self.lifecycle.lost(session, row)
        for orphan in handles:
            log.warning("removing orphan container", sandbox_id=orphan)
            await self.runtime.kill(orphan)
        await self.settle_interrupted()   # kills that failed half-way before the restart
        with self.db.session() as session:
            known = {row.id for row in sandbox_store.all_live(session, self.scope)}
        await self.pausing.remove_orphans(known)
        self.snapshots.remove_orphans()
        self.ready_snapshots.remove_orphans()
        log.info("recovered sandboxes", running=len(self.lifecycle.routed()))

    async def start(self) -> None:
        if self.settings.lxcfs and await asyncio.to_thread(lxcfs.ensure, self.settings.lxcfs_dir):
            self.boot.proc_mounts = lxcfs.proc_mounts(self.settings.lxcfs_dir)
        await self.network.start()   # the egress proxy's ports go into the policies recover re-applies
        await self.recover()
        await self.volumes.recover()   # after the sandboxes: unmount what no survivor uses
        await self.nodes.start_registered()
        self._reaper = asyncio.create_task(self._reap_forever())
        self.cooler.start()
        self.metrics.start()
        with self.db.session() as session:  # keep the default template warm from the first request
            base = template_store.resolve(session, "", "base")
            build = template_store.latest_ready_build(session, base.id) if base is not None else None
        if build is not None:
            self.pool.want(build)

    async def close(self) -> None:
        """Stop background work; sandboxes keep running for the next server start."""
        await self.cooler.close()
        await self.lifecycle_events.close()
        await self.nodes.close()
        await self.volumes.close()
        await self.metrics.close()
        await self.pool.close()
        await self.settled()   # teardowns are bounded; a crash instead leaves rows killing, settled at start
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        await self.network.close()
        await self.envd.aclose()
