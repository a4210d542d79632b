"""Assemble the server: store, runtime, orchestrator, API and front door on one ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.responses import JSONResponse

from sandlot.api import errors
from sandlot.api import observability as observability_routes
from sandlot.api import sandboxes as sandbox_routes
from sandlot.api import templates as template_routes
from sandlot.orchestrator.sandboxes import EnvdLauncher, SandboxManager
from sandlot.proxy.frontdoor import FrontDoor
from sandlot.runtime.base import Runtime
from sandlot.settings import Settings
from sandlot.store.database import Database


@dataclass
class Services:
    settings: Settings
    db: Database
    runtime: Runtime
    sandboxes: SandboxManager
    ready: bool = False


def build_services(settings: Settings, runtime: Runtime | None = None, launcher: EnvdLauncher | None = None) -> Services:
    from functools import partial

    from sandlot.runtime.envd_bundle import envd_launch
    from sandlot.runtime.runc import RuncRuntime

    db = Database(settings.effective_database_url)
    if runtime is None:
        runtime = RuncRuntime(
            settings.data_dir / "runtime" / settings.instance,
            settings.runtime_state_dir,
            subnet=settings.sandbox_subnet,
            pool_size=settings.network_pool_size,
            no_new_privileges=settings.no_new_privileges,
            net_prefix=settings.instance,
            nft_table=settings.instance,
        )
    default_launcher = partial(envd_launch, runtime_dir=settings.envd_runtime_dir)
    manager = SandboxManager(settings, db, runtime, launcher or default_launcher)
    return Services(settings=settings, db=db, runtime=runtime, sandboxes=manager)


def create_app(services: Services) -> FrontDoor:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.runtime.start()
        await services.sandboxes.start()
        services.ready = True
        try:
            yield
        finally:
            services.ready = False
            await services.sandboxes.close()
            await front_door.aclose()
            await services.runtime.close()
            services.db.dispose()

    api = FastAPI(title="Sandlot", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    api.state.services = services
    errors.install(api)

    @api.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        if not services.ready:
            return JSONResponse({"code": 503, "message": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    api.include_router(observability_routes.router)  # before /sandboxes/{id}: owns /sandboxes/metrics
    api.include_router(sandbox_routes.router)
    api.include_router(template_routes.router)
    front_door = FrontDoor(api, services.sandboxes, services.settings.domain)
    return front_door
