"""Assemble the server: store, runtime, orchestrator, API and front door on one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.responses import JSONResponse

from sandlot.api import builds as build_routes
from sandlot.api import cli_login as cli_login_routes
from sandlot.api import errors
from sandlot.api import events as event_routes
from sandlot.api import identity as identity_routes
from sandlot.api.idempotency import IdempotencyCache
from sandlot.api import observability as observability_routes
from sandlot.api import metrics_listener
from sandlot.api import openapi
from sandlot.api import nodes as node_routes
from sandlot.api import operator as operator_routes
from sandlot.api import prometheus as prometheus_routes
from sandlot.api.request_context import RequestContext, bind_path_ids
from sandlot.api import sandboxes as sandbox_routes
from sandlot.api import secrets as secret_routes
from sandlot.api import snapshots as snapshot_routes
from sandlot.api import teams as team_routes
from sandlot.api import templates as template_routes
from sandlot.api import volumes as volume_routes
from sandlot.api.prime import facade as prime_facade
from sandlot.dashboard.web import create_dashboard
from sandlot.orchestrator.disk_guard import DiskGuard, DiskGuardMiddleware
from sandlot.orchestrator.lxcfs_watch import LxcfsWatch
from sandlot.orchestrator.oom_guard import OomGuard
from sandlot.orchestrator.envd_client import EnvdAgent
from sandlot.orchestrator.requests import EnvdLauncher
from sandlot.orchestrator.sandboxes import SandboxManager
from sandlot.proxy.frontdoor import FrontDoor
from sandlot.runtime import log_drain, oom
from sandlot.runtime.base import Runtime
from sandlot.services import Services
from sandlot.settings import Settings
from sandlot.store import secrets as secret_store
from sandlot.store.database import Database
from sandlot.telemetry import Telemetry
from sandlot.templates import code_interpreter as code_interpreter_template
from sandlot.templates import mcp_gateway as mcp_gateway_template


def build_services(settings: Settings, runtime: Runtime | None = None, launcher: EnvdLauncher | None = None,
                   envd: EnvdAgent | None = None) -> Services:
    """The server's parts; tests pass a ``FakeRuntime`` and a fake ``envd`` agent to run in-process."""
    from functools import partial

    from sandlot.runtime.envd_bundle import envd_launch
    from sandlot.runtime.idmap import IdRange
    from sandlot.runtime.runc import RuncRuntime

    log_drain.MAX_BYTES = settings.sandbox_log_max_mb * 1024 * 1024
    oom.protect_server()   # where allowed: the server is the OOM killer's last choice
    db = Database(settings.effective_database_url)
    secret_store.register_key(db.engine, settings.data_dir)   # /secrets values sealed with the data dir's key
    if runtime is None:
        runtime = RuncRuntime(
            settings.runtime_dir,
            settings.runtime_state_dir,
            subnet=settings.sandbox_subnet,
            pool_size=settings.network_pool_size,
            no_new_privileges=settings.no_new_privileges,
            net_prefix=settings.instance,
            nft_table=settings.instance,
            criu=settings.criu_path,
            seccomp_filter=settings.seccomp,
            userns=IdRange.parse(settings.userns_range) if settings.userns else None,
            allow_private=tuple(settings.egress_allow_private),
        )
    default_launcher = partial(envd_launch, runtime_dir=settings.envd_runtime_dir)
    manager = SandboxManager(settings, db, runtime, launcher or default_launcher, envd)
    from sandlot.templates.builder import TemplateBuilder

    builder = TemplateBuilder(settings, db, runtime, launcher or default_launcher, manager.ready_snapshots)
    return Services(settings=settings, db=db, runtime=runtime, sandboxes=manager, builder=builder)


def health_problems(services: Services, disk_guard: DiskGuard | None = None) -> list[str]:
    """Features this server cannot offer right now (``GET /health`` lists them)."""
    problems = []
    if disk_guard is not None and disk_guard.problem():
        problems.append(str(disk_guard.problem()))
    criu_error = services.runtime.criu_error
    if criu_error:
        problems.append(f"memory pause/resume, snapshots and fork are unavailable (503): {criu_error}")
    return problems


def create_app(services: Services) -> FrontDoor:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.runtime.start()
        await services.sandboxes.start()
        if services.builder is not None:
            await services.builder.start()
        code_interpreter_template.ensure_built(services)  # background build of code-interpreter-v1
        mcp_gateway_template.ensure_built(services)  # background build of mcp-gateway
        oom_guard.start()  # a sandbox's fork bomb kills the bomb, not the sandbox (issue 12)
        disk_guard.start()  # 507 for new sandboxes and builds before the host's disk fills
        if services.settings.lxcfs:
            lxcfs_watch.start()  # a dead lxcfs is restarted under the running sandboxes
            if lxcfs_watch.running:
                services.runtime.before_start = lxcfs_watch.check   # ... and before one starts
        metrics_server = None
        if services.settings.metrics_listen:   # a token-less /metrics for a private scraper network
            host, port = metrics_listener.parse_listen(services.settings.metrics_listen)
            metrics_server = await metrics_listener.serve(host, port, telemetry.render)
        services.ready = True
        try:
            yield
        finally:
            services.ready = False
            if metrics_server is not None:
                metrics_server.close()
            await oom_guard.close()
            await disk_guard.close()
            await lxcfs_watch.close()
            await prime_ctx.aclose()  # Prime façade (issue 7): launch tasks and envd clients
            if services.builder is not None:
                await services.builder.close()
            await services.sandboxes.close()
            await front_door.aclose()
            await services.runtime.close()
            services.db.dispose()

    oom_guard = OomGuard(services.runtime)
    lxcfs_watch = LxcfsWatch(services.settings.lxcfs_dir, services.runtime)
    disk_guard = DiskGuard(services.settings.data_dir, services.settings.disk_min_free_mb)
    api = FastAPI(title="Sandlot", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  dependencies=[Depends(errors.most_specific_route),   # a wrong method is a 405 (sandlot/api/errors.py)
                                Depends(bind_path_ids)])   # the path's sandbox/template/build ids in log lines
    api.state.services = services
    # operator tools (issue 18): Prometheus instruments fed by the orchestrator's hooks
    telemetry = Telemetry()
    services.sandboxes.lifecycle.transitions.append(telemetry.on_transition)
    services.sandboxes.lifecycle.operations.append(telemetry.on_operation)
    if services.builder is not None:
        services.builder.finished.append(telemetry.on_build)
    api.state.telemetry = telemetry
    api.state.health_problems = lambda: health_problems(services, disk_guard)
    api.state.idempotency = IdempotencyCache()
    errors.install(api)
    api.add_middleware(DiskGuardMiddleware, guard=disk_guard)
    api.add_middleware(RequestContext, observer=telemetry)   # outermost: X-Request-Id, log ids, metrics by route
    openapi.install(api)   # error statuses and bodies as served (sandlot/api/openapi.py)

    @api.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        if not services.ready:
            return JSONResponse({"code": 503, "message": "starting"}, status_code=503)
        problems = health_problems(services, disk_guard)
        if problems:   # still serving: what does not work, and why
            return JSONResponse({"status": "degraded", "problems": problems})
        return JSONResponse({"status": "ok"})

    api.include_router(operator_routes.router)   # /admin/status (X-Admin-Token)
    api.include_router(node_routes.router)   # E2B's admin /nodes routes (X-Admin-Token, issue 17)
    api.include_router(prometheus_routes.router)   # /metrics (X-Admin-Token)
    api.include_router(observability_routes.router)  # before /sandboxes/{id}: owns /sandboxes/metrics
    api.include_router(build_routes.router)  # template builds; before the /templates/{id:path} catch-alls
    api.include_router(template_routes.router)  # owns DELETE /templates/{id}, delegating snapshot ids
    api.include_router(snapshot_routes.router)   # pause/resume/snapshots/fork (issue 4)
    api.include_router(sandbox_routes.router)
    api.include_router(secret_routes.router)   # /secrets (issue 15)
    api.include_router(volume_routes.router)   # /volumes and /volumecontent (issue 15)
    api.include_router(team_routes.router)   # /teams, team metrics, /api-keys, /access-tokens (issue 15)
    api.include_router(cli_login_routes.router)   # `e2b auth login`: /docs/api/cli, /oauth/* (issue 15)
    api.include_router(event_routes.router)   # lifecycle events and webhooks (issue 15)
    api.include_router(identity_routes.router)   # OIDC discovery + JWKS of the iam tokens (issue 16)
    prime_ctx = prime_facade.install(api, services)  # Prime Intellect /api/v1 + /gateway (issue 7)
    api.mount("/dashboard", create_dashboard(services, lambda: health_problems(services, disk_guard)))  # issue 18
    front_door = FrontDoor(api, services.sandboxes, services.settings.domain, services.settings.envd_port)
    if services.settings.role == "node" and services.settings.node_token:   # only API instances talk to a node
        front_door.node_token = services.settings.node_token.encode()
    telemetry.register(prometheus_routes.ServerCollector(services, api.state.health_problems, front_door.stats))
    return front_door
