"""In-process harness: the whole server (store, orchestrator, API, front door) over ``FakeRuntime``
and a fake envd, driven through ``httpx.ASGITransport``. No root, no runc, no network beyond
loopback; a test takes milliseconds.

What is fake and what is real:
- real: the ASGI app from ``create_app`` (routes, error mapping, idempotency, quotas, the
  front door), ``SandboxManager`` and every orchestrator part, a migrated SQLite store;
- fake: the runtime (:class:`EnvdFakeRuntime`, ``FakeRuntime`` plus the envd identity each
  container boots with) and envd (:class:`FakeEnvd`, which keeps envd's token rules).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from sandlot.app import build_services, create_app
from sandlot.orchestrator.envd_client import EnvdAgent, EnvdInitError
from sandlot.orchestrator.requests import ENVD_VERSION
from sandlot.orchestrator.sandboxes import SandboxManager
from sandlot.proxy.frontdoor import FrontDoor
from sandlot.runtime.base import SandboxHandle, SandboxSpec
from sandlot.runtime.egress import EgressPolicy
from sandlot.runtime.fake import FakeRuntime
from sandlot.services import Services
from sandlot.settings import Settings
from sandlot.store import keys
from sandlot.store import templates as template_store
from sandlot.store.database import Database
from sandlot.store.models import Build, Sandbox, Template

try:   # for _shared_tls_context only
    import httpx._transports.default as httpx_transports
except ImportError:   # pragma: no cover - another httpx layout
    httpx_transports = None  # type: ignore[assignment]

ENVD_PORT = 49983


# --- fake envd -------------------------------------------------------------------------------------


@dataclass
class EnvdInit:
    ip: str
    token: str | None
    body: dict[str, Any]


class FakeEnvd(EnvdAgent):
    """envd as the orchestrator sees it, per sandbox address, with envd's token rule: once a
    token is set (at boot from ``SANDLOT_ENVD_INIT``, or by an ``/init``), only its holder may
    ``/init`` again (401 otherwise). An address it knows nothing about accepts its first
    ``/init`` with any token.

    Knobs: ``unhealthy`` (addresses whose envd never answers ``/health``; ``"*"`` for all),
    ``fail_init`` (next ``/init`` raises it). ``runtime`` (when set): only an address of a
    running container is healthy, as a real envd inside it would be."""

    def __init__(self) -> None:   # no HTTP client: nothing leaves the process
        self.port = ENVD_PORT
        self.start_timeout_s = 0.0
        self.ready_timeout_s = 0.0
        self.runtime: FakeRuntime | None = None
        self.tokens: dict[str, str | None] = {}
        self.inits: list[EnvdInit] = []
        self.healthy_checks: list[str] = []
        self.warm_ups: list[str] = []
        self.commands: list[tuple[str, str | None, str | None]] = []
        self.unhealthy: set[str] = set()
        self.fail_init: Exception | None = None

    # --- what the fake runtime tells it -----------------------------------------------------------

    def boot(self, ip: str, token: str | None) -> None:
        """envd (re)started at ``ip`` with ``token`` from its container's config."""
        self.tokens[ip] = token

    def forget(self, ip: str) -> None:
        self.tokens.pop(ip, None)

    # --- EnvdAgent --------------------------------------------------------------------------------

    def _running_at(self, ip: str) -> bool:
        return self.runtime is None or any(sb.ip == ip and sb.state == "running"
                                           for sb in self.runtime.sandboxes.values())

    async def wait_healthy(self, ip: str) -> None:
        self.healthy_checks.append(ip)
        if "*" in self.unhealthy or ip in self.unhealthy or not self._running_at(ip):
            raise TimeoutError(f"envd did not become healthy within 0s (fake envd at {ip})")

    async def probe(self, ip: str) -> bool:
        self.healthy_checks.append(ip)
        return not ("*" in self.unhealthy or ip in self.unhealthy or not self._running_at(ip))

    def _authorize(self, ip: str, token: str | None) -> None:
        """What envd's ``_guard`` does, after the connection a dead or paused container refuses."""
        if not self._running_at(ip):
            raise httpx.ConnectError(f"All connection attempts failed (fake envd at {ip})")
        if ip in self.tokens and self.tokens[ip] is not None and token != self.tokens[ip]:
            raise EnvdInitError(401, '{"code":401,"message":"invalid access token"}')

    async def init(self, ip: str, token: str | None, body: dict[str, object]) -> None:
        if self.fail_init is not None:
            exc, self.fail_init = self.fail_init, None
            raise exc
        self._authorize(ip, token)
        self.inits.append(EnvdInit(ip, token, dict(body)))
        if "accessToken" in body:
            self.tokens[ip] = str(body["accessToken"])

    async def start_command(self, ip: str, token: str, *, user: str, workdir: str | None, env: dict[str, str],
                            bash: bool, start_cmd: str | None, ready_cmd: str | None) -> None:
        self._authorize(ip, token)
        self.commands.append((ip, start_cmd, ready_cmd))

    async def warm_up(self, ip: str, token: str) -> None:
        self._authorize(ip, token)
        self.warm_ups.append(ip)

    async def aclose(self) -> None:
        pass

    def inits_at(self, ip: str) -> list[EnvdInit]:
        return [i for i in self.inits if i.ip == ip]


class EnvdFakeRuntime(FakeRuntime):
    """``FakeRuntime`` that tells :class:`FakeEnvd` which token each container's envd has:
    the boot init's at create and after a filesystem-only resume, the source's at clone
    (baked into the memory image), unchanged across a memory pause."""

    def __init__(self, envd: FakeEnvd, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.envd = envd
        envd.runtime = self
        self.specs: dict[str, SandboxSpec] = {}
        self.snapshot_tokens: dict[str, str | None] = {}
        self.interleave = 0
        """Times each container operation yields to the event loop first (0: completes at once),
        so concurrent requests really interleave inside runtime calls, as they do with runc."""
        self.yields = 0

    async def _yield(self) -> None:
        for _ in range(self.interleave):
            self.yields += 1
            await asyncio.sleep(0)

    @staticmethod
    def _boot_token(spec: SandboxSpec) -> str | None:
        raw = spec.env.get("SANDLOT_ENVD_INIT")
        return json.loads(raw).get("accessToken") if raw else None

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        await self._yield()
        handle = await super().create(spec)
        self.specs[spec.sandbox_id] = spec
        self.envd.boot(handle.ip, self._boot_token(spec))
        return handle

    async def kill(self, sandbox_id: str) -> None:
        await self._yield()
        sb = self.sandboxes.get(sandbox_id)
        await super().kill(sandbox_id)
        if sb is not None and sandbox_id not in self.sandboxes:
            self.envd.forget(sb.ip)
            self.specs.pop(sandbox_id, None)

    async def pause(self, sandbox_id: str, *, memory: bool = True) -> dict[str, float]:
        await self._yield()
        return await super().pause(sandbox_id, memory=memory)

    async def resume(self, sandbox_id: str, *, memory: bool = True) -> SandboxHandle:
        await self._yield()
        handle = await super().resume(sandbox_id, memory=memory)
        if handle.rebooted and sandbox_id in self.specs:
            self.envd.boot(handle.ip, self._boot_token(self.specs[sandbox_id]))
        return handle

    async def snapshot(self, sandbox_id: str, dest: Path, *, memory: bool = True) -> None:
        await self._yield()
        await super().snapshot(sandbox_id, dest, memory=memory)
        self.snapshot_tokens[str(dest)] = self.envd.tokens.get(self.sandboxes[sandbox_id].ip)

    async def clone(self, snapshot: Path, sandbox_id: str, *, egress: EgressPolicy | None = None) -> SandboxHandle:
        await self._yield()
        handle = await super().clone(snapshot, sandbox_id, egress=egress)
        if str(snapshot) in self.snapshot_tokens:
            self.envd.boot(handle.ip, self.snapshot_tokens[str(snapshot)])
        else:
            self.envd.forget(handle.ip)
        return handle


# --- speed ------------------------------------------------------------------------------------------

_TLS_CONTEXTS: dict[tuple[object, bool], ssl.SSLContext] = {}


@pytest.fixture(autouse=True)
def _shared_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every server part makes its own ``httpx.AsyncClient``, and each loads the CA bundle
    (~30 ms, a third of a test's set-up); none speaks TLS here, so they share one context.
    (httpx internals: another httpx version without this function just runs slower.)"""
    original = getattr(httpx_transports, "create_ssl_context", None)
    if original is None:
        return

    def cached(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        key = (verify, trust_env)
        if key not in _TLS_CONTEXTS:
            _TLS_CONTEXTS[key] = original(verify=verify, cert=cert, trust_env=trust_env)
        return _TLS_CONTEXTS[key]

    monkeypatch.setattr(httpx_transports, "create_ssl_context", cached)


@pytest.fixture(autouse=True)
def _plain_tracebacks() -> Iterator[None]:
    """structlog's default console renderer draws logged exceptions with rich, locals included:
    seconds per 500 answered (the server logs every unexpected error). Plain tracebacks here."""
    saved = structlog.get_config()
    processors = [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
                  if isinstance(p, structlog.dev.ConsoleRenderer) else p for p in saved["processors"]]
    structlog.configure(processors=processors)
    yield
    structlog.configure(**saved)


# --- the store, once per session ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoreTemplate:
    """A migrated database with the ``base`` template, copied per test (migrating costs ~1 s)."""

    db_file: Path
    layers: Path


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> StoreTemplate:
    root = tmp_path_factory.mktemp("inprocess-store")
    layers = root / "layers" / "base"
    layers.mkdir(parents=True)
    db_file = root / "sandlot.db"
    db = Database(f"sqlite:///{db_file}")
    db.migrate()
    with db.session() as session, session.begin():
        template_store.register_ready(session, alias="base", team_id=None, public=True, layers=[str(layers)],
                                      cpu_count=1, memory_mb=256, disk_mb=1024, envd_version=ENVD_VERSION)
    db.dispose()
    for suffix in ("-wal", "-shm"):   # WAL checkpointed at dispose; nothing else to copy
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    return StoreTemplate(db_file, layers)


# --- the server -----------------------------------------------------------------------------------------


@dataclass
class Stack:
    """One in-process server and what a test needs to poke at it."""

    settings: Settings
    services: Services
    app: FrontDoor
    runtime: EnvdFakeRuntime
    envd: FakeEnvd
    team_id: str
    api_key: str
    other_team_id: str
    other_key: str
    template: Template
    build: Build
    client: httpx.AsyncClient = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def manager(self) -> SandboxManager:
        return self.services.sandboxes

    @property
    def db(self) -> Database:
        return self.services.db

    def headers(self, *, other: bool = False) -> dict[str, str]:
        return {"X-API-Key": self.other_key if other else self.api_key}

    async def create(self, body: dict[str, Any] | None = None, *, other: bool = False, expect: int = 201,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.client.post("/sandboxes", json={"templateID": "base", **(body or {})},
                                          headers={**self.headers(other=other), **(headers or {})})
        assert response.status_code == expect, response.text
        return response.json()

    def row(self, sandbox_id: str) -> Sandbox | None:
        with self.db.session() as session:
            return session.get(Sandbox, sandbox_id)

    def update(self, sandbox_id: str, **fields: Any) -> None:
        """Write row fields directly (an end time in the past, a state a crash left behind)."""
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            assert row is not None
            for name, value in fields.items():
                setattr(row, name, value)

    def rows(self) -> list[Sandbox]:
        from sqlalchemy import select

        with self.db.session() as session:
            return list(session.scalars(select(Sandbox)))

    async def reap_until(self, done: Callable[[], bool], *, max_steps: int = 500) -> bool:
        """Run the manager's real reaper loop (no pause between ticks, liveness every tick) until
        ``done()`` holds or ``max_steps`` event-loop steps passed; whether it holds. Counts loop
        steps, not seconds: the outcome never depends on the machine's speed."""
        task = asyncio.create_task(self.manager._reap_forever(interval_s=0, liveness_every=1))
        try:
            for _ in range(max_steps):
                if done():
                    return True
                await asyncio.sleep(0)
            return done()
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def new_manager(self) -> SandboxManager:
        """A second manager over the same store, runtime and envd: the server after a restart."""
        return SandboxManager(self.settings, self.db, self.runtime, launcher, self.envd)


def launcher(port: int) -> tuple[list[str], dict[str, str]]:
    return ["/bin/true"], {}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'sandlot.db'}", lxcfs=False,
        code_interpreter_template=False, warm_pool_size=0, instance="t" + secrets.token_hex(3),
        userns=False, trust_host_ca=False, seccomp=False, disk_min_free_mb=0, dns_upstreams=["127.0.0.53"],
        domain=None, tls=False, api_key=None, failpoints="", paused_ttl_s=0, envd_port=ENVD_PORT,
    )
    values.update(overrides)
    return Settings(**values)


async def start_stack(tmp_path: Path, store: StoreTemplate, **overrides: Any) -> Stack:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(store.db_file, data_dir / "sandlot.db")
    settings = make_settings(data_dir, **overrides)
    envd = FakeEnvd()
    runtime = EnvdFakeRuntime(envd)
    services = build_services(settings, runtime=runtime, launcher=launcher, envd=envd)
    services.builder = None   # template builds need real sandboxes; not under test here
    with services.db.session() as session, session.begin():
        team = keys.create_team(session, "team-a")
        _, api_key = keys.add_key(session, team, "a")
        other = keys.create_team(session, "team-b")
        _, other_key = keys.add_key(session, other, "b")
        template = template_store.resolve(session, team.id, "base")
        assert template is not None
        build = template_store.latest_ready_build(session, template.id)
        assert build is not None
        team_id, other_id = team.id, other.id
    app = create_app(services)
    await runtime.start()
    await services.sandboxes.start()
    reaper = services.sandboxes._reaper   # tests call expire_due/bury_dead themselves: no racing ticker
    if reaper is not None:
        reaper.cancel()
    services.ready = True
    stack = Stack(settings, services, app, runtime, envd, team_id, api_key, other_id, other_key, template, build)
    stack.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://sandlot.test")
    return stack


async def stop_stack(stack: Stack) -> None:
    await stack.client.aclose()
    stack.services.ready = False
    await stack.app.api.state.prime.aclose()
    await stack.services.sandboxes.close()
    await stack.app.aclose()
    await stack.runtime.close()
    stack.services.db.dispose()


@pytest.fixture
async def stack(tmp_path: Path, store_template: StoreTemplate) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path, store_template)
    try:
        yield s
    finally:
        await stop_stack(s)
