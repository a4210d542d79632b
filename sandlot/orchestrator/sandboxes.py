"""Create, find, extend and kill sandboxes; expire them; recover them after a restart.

The store row is written *before* the container exists (state ``creating``) so a
crash half-way is found and cleaned at the next start; any failure during
create tears down whatever the runtime made.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable

import httpx
import structlog

from sandlot import ids
from sandlot.orchestrator import pausing
from sandlot.orchestrator.envd_client import EnvdShell, Target, wait_healthy, wait_ready
from sandlot.orchestrator.envd_client import run as envd_run
from sandlot.proxy.traffic import private_traffic_token
from sandlot.runtime.dns_filter import host_resolvers
from sandlot.runtime.egress import EgressPolicy, PolicyError, parse_policy
from sandlot.orchestrator.events import EventLog
from sandlot.orchestrator.metrics import MetricsSampler
from sandlot.orchestrator.ready_snapshots import ReadySnapshots
from sandlot.orchestrator.warm_pool import WarmPool
from sandlot.quotas import reserve_sandbox
from sandlot.runtime import lxcfs
from sandlot.runtime.base import BindMount, Runtime, SandboxHandle, SandboxSpec
from sandlot.runtime.overlay import has_bash
from sandlot.settings import Settings
from sandlot.store import sandboxes as sandbox_store
from sandlot.store import templates as template_store
from sandlot.store.database import Database
from sandlot.store.models import Build, Sandbox, Template

log = structlog.get_logger("sandlot.orchestrator")

ENVD_VERSION = "0.6.13"
"""Highest envd protocol version whose gated features all work (see issue notes)."""

EnvdLauncher = Callable[[int], tuple[list[str], dict[str, str]]]
"""Returns argv and environment that start envd inside a sandbox on a port."""

DEFAULT_USER = "user"
DEFAULT_WORKDIR = "/home/user"


class SandboxError(Exception):
    """A lifecycle operation failed; ``status`` is the HTTP status to report."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CreateRequest:
    team_id: str
    template: Template
    build: Build
    alias: str | None
    timeout_s: int
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    auto_pause: bool = False
    auto_resume: bool = False
    pause_memory: bool = True
    allow_internet_access: bool | None = None
    network: dict | None = None
    sandbox_id: str | None = None
    """Pre-assigned id (the Prime façade answers with it before the sandbox exists)."""


@dataclass(frozen=True)
class Route:
    """Where the front door sends a sandbox's traffic."""

    ip: str
    state: str
    access_token: str
    traffic_token: str | None = None
    """Required in ``e2b-traffic-access-token`` on user ports when set (allowPublicTraffic=false)."""
    mask_request_host: str | None = None


def route_for(row: Sandbox, ip: str, state: str = "running") -> Route:
    """The front door's view of a sandbox row (network ingress settings included)."""
    network = row.network or {}
    return Route(ip, state, row.envd_access_token, private_traffic_token(row.id, row.envd_access_token, network),
                 network.get("maskRequestHost"))


class SandboxManager:
    def __init__(self, settings: Settings, db: Database, runtime: Runtime, envd_launch: EnvdLauncher) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.envd_launch = envd_launch
        self._routes: dict[str, Route] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http = httpx.AsyncClient()
        self._reaper: asyncio.Task[None] | None = None
        self.pause_hooks: list[Callable[[str], Awaitable[None]]] = []
        self.death_hooks: list[Callable[[str, str], None]] = []
        """Called with (sandbox id, ``"oom"`` or ``"exited"``) when a container died on its own."""
        """Called with a sandbox IP after it was paused (the front door drops stale keep-alives)."""
        self.metrics = MetricsSampler(runtime)
        self._proc_mounts: list[BindMount] = []
        """lxcfs views of /proc files, once ``start`` has lxcfs running."""
        self.ready_snapshots = ReadySnapshots(self)
        self.pool = WarmPool(
            runtime,
            self._http,
            self._warm_spec,
            self._warm_prepare,
            self.ready_snapshots.restore,
            size=settings.warm_pool_size,
            envd_port=settings.envd_port,
            envd_timeout_s=settings.envd_start_timeout_s,
            data_dir=settings.data_dir,
        )
        self.events = EventLog(settings.data_dir / "logs" / settings.instance)

    # --- lookups -------------------------------------------------------------------------

    def route(self, sandbox_id: str) -> Route | None:
        return self._routes.get(sandbox_id)

    def signing_tokens(self) -> list[tuple[str, str]]:
        """``(sandbox_id, envd_access_token)`` of running sandboxes, for signed-URL routing."""
        return [(sid, r.access_token) for sid, r in self._routes.items() if r.state == "running"]

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # --- create --------------------------------------------------------------------------

    async def create(self, request: CreateRequest) -> Sandbox:
        """``SandboxError(429)`` when the team already runs its limit of sandboxes (``quotas``)."""
        sandbox_id = request.sandbox_id or ids.new_sandbox_id()
        now = datetime.now(timezone.utc)
        row = Sandbox(
            id=sandbox_id,
            team_id=request.team_id,
            template_id=request.template.id,
            build_id=request.build.id,
            alias=request.alias,
            state="creating",
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
        )
        with self.db.session() as session, session.begin():
            # quota check, warm claim and insert in one step (no await between them, the team locked)
            reserve_sandbox(session, self.settings, request.team_id, request.sandbox_id, error=SandboxError)
            warm = self.pool.claim(request.build) if request.sandbox_id is None else None
            if warm is not None:  # a pooled sandbox keeps the id it was booted with
                sandbox_id = row.id = warm.sandbox_id
            session.add(row)
        try:
            async with self._lock(sandbox_id):
                # booted ahead by the warm pool, else restored from the template's post-ready
                # snapshot: either way identity-less, it gets its identity through /init
                restored = None if warm is not None else await self.ready_snapshots.restore(request.build, sandbox_id)
                handle = warm or restored
                booted = handle is None
                if handle is None:
                    handle = await self.runtime.create(self._spec(row, request.build))
                try:
                    # the policy first: a pooled or restored sandbox's processes get the
                    # user's identity and env vars (secrets) only once it is in force
                    await self.apply_network(handle.ip, request.allow_internet_access, request.network)
                    if not booted:
                        await self.pool.initialize(handle, request.build, self._envd_init(row, request.build))
                    if self.settings.failpoint("create-after-runtime"):
                        raise RuntimeError("injected failure after the container was created")
                    if booted:
                        await wait_healthy(
                            self._http, handle.ip, self.settings.envd_port, self.settings.envd_start_timeout_s
                        )
                        if request.build.start_cmd or request.build.ready_cmd:  # template start command (issue 6)
                            await self._start_command(row, request.build, handle.ip)
                except BaseException:
                    await self._clear_network(handle.ip)
                    await self.runtime.kill(sandbox_id)
                    raise
        except BaseException as exc:
            self.abandon(sandbox_id, exc, "Failed to create sandbox")
            raise
        row = self.activate(sandbox_id, handle, request.timeout_s, spawned_from=request.template.id)
        self.events.record(sandbox_id, "sandbox created", template=request.template.id, ip=handle.ip,
                           warm=warm is not None, restored=restored is not None)
        self.pool.want(request.build)
        log.info("sandbox created", sandbox_id=sandbox_id, template=request.template.id, ip=handle.ip,
                 warm=warm is not None, restored=restored is not None)
        return row

    def abandon(self, sandbox_id: str, exc: BaseException, what: str) -> None:
        """Forget a sandbox whose start failed (its container is already gone).

        Raises ``SandboxError(500)`` for ordinary errors; returns for cancellations,
        which the caller re-raises."""
        with self.db.session() as session, session.begin():
            stale = session.get(Sandbox, sandbox_id)
            if stale is not None:
                session.delete(stale)
        self._locks.pop(sandbox_id, None)
        log.error(what.lower(), sandbox_id=sandbox_id, error=repr(exc))
        if isinstance(exc, Exception):
            raise SandboxError(500, f"{what}: {exc}") from exc

    def activate(self, sandbox_id: str, handle: SandboxHandle, timeout_s: int, *, spawned_from: str | None = None) -> Sandbox:
        """Mark a started sandbox running (its clock starts now) and route traffic to it."""
        started = datetime.now(timezone.utc)
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            assert row is not None
            row.state = "running"
            row.ip = handle.ip
            row.started_at = started
            row.end_at = started + timedelta(seconds=timeout_s)
            if spawned_from is not None:
                template_store.mark_spawned(session, spawned_from)
        self._routes[sandbox_id] = route_for(row, handle.ip)
        self.metrics.track(sandbox_id, row.cpu_count, row.disk_mb * 1024 * 1024)
        return row

    async def _start_command(self, row: Sandbox, build: Build, ip: str) -> None:
        """Run the template's startCmd and wait for its readyCmd: at build time before the
        post-ready snapshot, and at create for builds without one (``ready_snapshots``)."""
        user = build.default_user or DEFAULT_USER
        workdir = build.default_workdir or DEFAULT_WORKDIR
        env = {**(build.env_vars or {}), **(row.env_vars or {})}
        shell = EnvdShell(Target(ip, self.settings.envd_port, row.envd_access_token), user, workdir, env,
                          has_bash([Path(p) for p in build.layers]), self._http, self.settings.build_ready_timeout_s)
        if build.start_cmd:
            await shell.spawn(build.start_cmd)
        if build.ready_cmd:
            await wait_ready(shell, build.ready_cmd, self.settings.build_ready_timeout_s)

    async def reidentify(self, row: Sandbox, ip: str) -> None:
        """Give a rebooted sandbox (filesystem-only resume) its identity again: envd started
        from the container's config, which for a sandbox claimed from the warm pool holds the
        pool's boot token and none of the create's env vars."""
        with self.db.session() as session:
            build = session.get(Build, row.build_id)
        if build is None:
            raise RuntimeError(f"the build of sandbox {row.id} is gone")
        init = self._envd_init(row, build)
        url = f"http://{ip}:{self.settings.envd_port}/init"
        for token in (row.envd_access_token, self.pool.boot_token(build)):
            response = await self._http.post(url, json=init, timeout=10,
                                             headers={"X-Access-Token": token} if token else {})
            if response.status_code < 300:
                return
            if response.status_code != 401:
                break
        raise RuntimeError(f"envd /init answered {response.status_code}: {response.text[:200]}")

    @staticmethod
    def _envd_init(row: Sandbox, build: Build) -> dict[str, object]:
        """envd's ``/init`` body: a built template's ENV/USER/WORKDIR (issue 6); the create request's envs win."""
        return {
            "envVars": {**(build.env_vars or {}), **(row.env_vars or {})},
            "accessToken": row.envd_access_token,
            "defaultUser": build.default_user or DEFAULT_USER,
            "defaultWorkdir": build.default_workdir or DEFAULT_WORKDIR,
        }

    def _warm_row(self, sandbox_id: str, build: Build) -> Sandbox:
        """A never-stored row for a pooled sandbox: the build's boot token, no create-time env vars yet."""
        return Sandbox(
            id=sandbox_id, env_vars={}, envd_access_token=self.pool.boot_token(build), cpu_count=build.cpu_count,
            memory_mb=build.memory_mb, disk_mb=build.disk_mb,
        )

    def _warm_spec(self, sandbox_id: str, build: Build) -> SandboxSpec:
        return self._spec(self._warm_row(sandbox_id, build), build)

    async def _warm_prepare(self, handle: SandboxHandle, build: Build) -> None:
        """Start command first; then touch envd's /init and process paths once, so the
        claimed sandbox's first call doesn't pay envd's lazy first-use costs."""
        if build.start_cmd or build.ready_cmd:
            await self._start_command(self._warm_row(handle.sandbox_id, build), build, handle.ip)
        token = self.pool.boot_token(build)
        await self._http.post(f"http://{handle.ip}:{self.settings.envd_port}/init", json={},
                              headers={"X-Access-Token": token}, timeout=10)
        await envd_run(
            self._http, Target(handle.ip, self.settings.envd_port, token), "true", user="root", cwd=None, envs={},
            bash=False, on_output=lambda _stream, _text: None, timeout_s=10,
        )

    def _spec(self, row: Sandbox, build: Build) -> SandboxSpec:
        argv, env = self.envd_launch(self.settings.envd_port)
        env = dict(env)
        env["SANDLOT_ENVD_INIT"] = json.dumps(self._envd_init(row, build))
        env["SANDLOT_ENVD_PORT"] = str(self.settings.envd_port)
        mounts = [BindMount(self.settings.envd_runtime_dir, "/.sandlot", read_only=True)]
        if self.settings.trust_host_ca and self.settings.host_ca_bundle.exists():
            mounts.append(BindMount(self.settings.host_ca_bundle, "/etc/ssl/certs/ca-certificates.crt", read_only=True))
        mounts += self._proc_mounts
        return SandboxSpec(
            sandbox_id=row.id,
            layers=[Path(p) for p in build.layers],
            cpu_count=row.cpu_count,
            memory_mb=row.memory_mb,
            pids_limit=self.settings.pids_limit,
            args=argv,
            env=env,
            mounts=mounts,
            hostname="e2b",
            disk_mb=row.disk_mb,
        )

    # --- timeouts ------------------------------------------------------------------------

    def _checked_end(self, row: Sandbox, timeout_s: int) -> datetime:
        end = datetime.now(timezone.utc) + timedelta(seconds=timeout_s)
        limit = row.started_at + timedelta(seconds=self.settings.max_lifetime_s)
        if end > limit:
            raise SandboxError(400, f"Max instance length exceeded: a sandbox may live at most {self.settings.max_lifetime_s} s")
        return end

    async def set_timeout(self, team_id: str, sandbox_id: str, timeout_s: int) -> None:
        """Set the end time to now + timeout (may shorten), as E2B's ``POST /timeout``."""
        with self.db.session() as session, session.begin():
            row = sandbox_store.get_for_team(session, team_id, sandbox_id)
            if row is None:
                raise SandboxError(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
            row.end_at = self._checked_end(row, timeout_s)

    async def keep_alive(self, team_id: str, sandbox_id: str, timeout_s: int) -> Sandbox:
        """Extend (never shorten) the end time, as E2B's connect and refresh do."""
        with self.db.session() as session, session.begin():
            row = sandbox_store.get_for_team(session, team_id, sandbox_id)
            if row is None:
                raise SandboxError(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
            if row.state != "running":
                raise SandboxError(409, f"Sandbox \"{sandbox_id}\" is {row.state}")
            end = self._checked_end(row, timeout_s)
            if end > row.end_at:
                row.end_at = end
            return row

    # --- network -------------------------------------------------------------------------

    def egress_policy(self, allow_internet_access: bool | None, network: dict | None) -> EgressPolicy:
        """Validated policy (``SandboxError`` 400 when invalid or unsupported by the runtime)."""
        try:
            policy = parse_policy(allow_internet_access, network)
        except PolicyError as exc:
            raise SandboxError(400, str(exc)) from exc
        if not policy.is_open and getattr(self.runtime, "network", None) is None:
            raise SandboxError(400, "Egress rules are not supported by this sandbox runtime")
        upstreams = tuple(self.settings.dns_upstreams) or host_resolvers()
        return EgressPolicy(policy.allow, policy.deny, policy.domains, policy.dns_servers, upstreams)

    async def apply_network(self, ip: str, allow_internet_access: bool | None, network: dict | None) -> None:
        """Install the egress policy of the sandbox at ``ip`` (also call after a resume/restore)."""
        policy = self.egress_policy(allow_internet_access, network)
        net = getattr(self.runtime, "network", None)
        if net is not None:
            await net.set_policy(ip, policy)

    async def _clear_network(self, ip: str | None) -> None:
        net = getattr(self.runtime, "network", None)
        if net is None or not ip:
            return
        try:
            await net.clear_policy(ip)
        except Exception:
            log.exception("could not clear network policy", ip=ip)

    async def update_network(self, team_id: str, sandbox_id: str, allow_internet_access: bool | None,
                             egress: dict) -> None:
        """E2B's ``PUT /sandboxes/{id}/network``: replace the egress rules of a running sandbox.

        Omitted fields are cleared; ingress settings (public traffic, host mask) are kept."""
        async with self._lock(sandbox_id):
            with self.db.session() as session:
                row = sandbox_store.get_for_team(session, team_id, sandbox_id)
                if row is None:
                    raise SandboxError(404, f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
                if row.state != "running" or not row.ip:
                    raise SandboxError(409, f"Sandbox \"{sandbox_id}\" is {row.state}")
                network = {k: v for k, v in (row.network or {}).items()
                           if k in ("allowPublicTraffic", "maskRequestHost")}
                network.update({k: v for k, v in egress.items() if v is not None})
                ip = row.ip
            self.egress_policy(allow_internet_access, network)   # validate before touching anything
            await self.apply_network(ip, allow_internet_access, network)
            with self.db.session() as session, session.begin():
                fresh = session.get(Sandbox, sandbox_id)
                if fresh is not None:
                    fresh.network = network
                    fresh.allow_internet_access = allow_internet_access

    # --- kill ----------------------------------------------------------------------------

    async def kill(self, team_id: str, sandbox_id: str) -> bool:
        with self.db.session() as session:
            row = sandbox_store.get_for_team(session, team_id, sandbox_id)
        if row is None:
            return False
        await self._destroy(sandbox_id)
        return True

    async def _destroy(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            self._routes.pop(sandbox_id, None)
            with self.db.session() as session, session.begin():
                row = session.get(Sandbox, sandbox_id)
                if row is not None:
                    row.state = "killing"
                ip = row.ip if row is not None else None
            await self._clear_network(ip)
            await self.runtime.kill(sandbox_id)
            with self.db.session() as session, session.begin():
                row = session.get(Sandbox, sandbox_id)
                if row is not None:
                    session.delete(row)
            self.metrics.forget(sandbox_id)
            self.events.drop(sandbox_id)
        self._locks.pop(sandbox_id, None)
        log.info("sandbox killed", sandbox_id=sandbox_id)

    # --- background work ------------------------------------------------------------------

    async def expire_due(self) -> None:
        now = datetime.now(timezone.utc)
        with self.db.session() as session:
            rows = sandbox_store.expired(session, now)
            due = [row.id for row in rows]
            to_pause = {row.id for row in rows if row.auto_pause}
            if self.settings.paused_ttl_s > 0:   # the operator's retention for paused sandboxes
                due += [row.id for row in sandbox_store.paused_before(
                    session, now - timedelta(seconds=self.settings.paused_ttl_s))]
        for sandbox_id in due:
            try:
                if sandbox_id in to_pause:   # autoPause: pause instead of dying (issue 4)
                    try:
                        await pausing.pause_now(self, sandbox_id)
                        continue
                    except SandboxError as exc:
                        if exc.status == 409:
                            continue
                        log.error("auto-pause failed; killing the sandbox", sandbox_id=sandbox_id, error=exc.message)
                await self._destroy(sandbox_id)
            except Exception:  # keep the reaper alive; the next tick retries
                log.exception("failed to expire sandbox", sandbox_id=sandbox_id)

    async def bury_dead(self) -> None:
        """Remove running sandboxes whose container died on its own (envd killed, OOM, …).

        E2B reports such a sandbox as gone; the death hooks tell the façades why."""
        for sandbox_id, route in list(self._routes.items()):
            if route.state != "running" or self._lock(sandbox_id).locked():
                continue
            if await self.runtime.is_alive(sandbox_id):
                continue
            async with self._lock(sandbox_id):  # a pause or kill may have won the race
                current = self._routes.get(sandbox_id)
                if current is None or current.state != "running" or await self.runtime.is_alive(sandbox_id):
                    continue
            reason = "oom" if self.runtime.oom_killed(sandbox_id) else "exited"
            log.warning("sandbox died", sandbox_id=sandbox_id, reason=reason)
            for hook in self.death_hooks:
                try:
                    hook(sandbox_id, reason)
                except Exception:
                    log.exception("death hook failed", sandbox_id=sandbox_id)
            await self._destroy(sandbox_id)

    async def _reap_forever(self, interval_s: float = 0.5, liveness_every: int = 4) -> None:
        tick = 0
        while True:
            await asyncio.sleep(interval_s)
            tick += 1
            try:
                await self.expire_due()
                if tick % liveness_every == 0:
                    await self.bury_dead()
            except Exception:
                log.exception("reaper tick failed")

    async def recover(self) -> None:
        """Match the store against the containers that survived a restart.

        Rows whose container is gone are dropped; containers without a row
        (a create that crashed half-way) are torn down.
        """
        handles = {h.sandbox_id: h for h in await self.runtime.list()}
        with self.db.session() as session, session.begin():
            for row in sandbox_store.all_live(session):
                handle = handles.pop(row.id, None)
                if row.state in ("paused", "pausing", "resuming"):   # issue 4: settle pauses
                    if await pausing.recover(self, row):
                        continue
                    await self.runtime.kill(row.id)
                    log.warning("dropping paused sandbox lost across restart", sandbox_id=row.id, state=row.state)
                    session.delete(row)
                    continue
                if row.state == "running" and handle is not None and await self.runtime.is_alive(row.id):
                    thaw = getattr(self.runtime, "thaw_if_frozen", None)   # runc only
                    if thaw is not None and await thaw(row.id):
                        log.warning("thawed a sandbox a killed server left frozen", sandbox_id=row.id)
                    try:   # the nft table was rebuilt at start: policies come back from the store
                        await self.apply_network(handle.ip, row.allow_internet_access, row.network)
                    except Exception:
                        log.exception("could not restore network policy; killing sandbox", sandbox_id=row.id)
                        await self.runtime.kill(row.id)
                        session.delete(row)
                        continue
                    self._routes[row.id] = route_for(row, handle.ip)
                    row.ip = handle.ip
                    self.metrics.track(row.id, row.cpu_count, row.disk_mb * 1024 * 1024)
                    self.events.record(row.id, "sandbox re-adopted after a server restart")
                    continue
                if handle is not None:
                    await self.runtime.kill(row.id)
                log.warning("dropping sandbox lost across restart", sandbox_id=row.id, state=row.state)
                session.delete(row)
        for orphan in handles:
            log.warning("removing orphan container", sandbox_id=orphan)
            await self.runtime.kill(orphan)
        await pausing.remove_orphans(self)
        self.ready_snapshots.remove_orphans()
        log.info("recovered sandboxes", running=len(self._routes))

    async def start(self) -> None:
        if self.settings.lxcfs and await asyncio.to_thread(lxcfs.ensure, self.settings.lxcfs_dir):
            self._proc_mounts = lxcfs.proc_mounts(self.settings.lxcfs_dir)
        await self.recover()
        self._reaper = asyncio.create_task(self._reap_forever())
        self.metrics.start()
        with self.db.session() as session:  # keep the default template warm from the first request
            base = template_store.resolve(session, "", "base")
            build = template_store.latest_ready_build(session, base.id) if base is not None else None
        if build is not None:
            self.pool.want(build)

    async def close(self) -> None:
        """Stop background work; sandboxes keep running for the next server start."""
        await self.metrics.close()
        await self.pool.close()
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
        await self._http.aclose()
