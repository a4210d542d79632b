"""Plug the Prime façade into the API app: routers, error shape, and the gateway at ``/gateway``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from sandlot.api.prime import background_jobs, checkpoints, egress, errors, image_updates, images, sandboxes, volumes
from sandlot.api.prime.context import PrimeContext
from sandlot.api.prime.envd import EnvdAccess
from sandlot.api.prime.gateway import Gateway
from sandlot.api.prime.launcher import fail_orphans
from sandlot.api.prime.records import record_death
from sandlot.api.prime.tokens import TokenSigner

if TYPE_CHECKING:
    from sandlot.services import Services

GATEWAY_PATH = "/gateway"


def install(api: FastAPI, services: Services) -> PrimeContext:
    """Returns the context; close it (``await ctx.aclose()``) when the app shuts down."""
    settings = services.settings
    ctx = PrimeContext(services, TokenSigner.from_data_dir(settings.data_dir), EnvdAccess(settings.envd_port))
    api.state.prime = ctx
    errors.install(api)
    # before sandboxes: ``/sandbox/volumes`` must not read as ``/sandbox/{sandbox_id}``
    api.include_router(volumes.router)
    api.include_router(checkpoints.router)
    api.include_router(background_jobs.router)
    api.include_router(egress.router)
    api.include_router(sandboxes.router)
    api.include_router(images.router)
    api.include_router(image_updates.router)
    api.mount(GATEWAY_PATH, Gateway(ctx))
    fail_orphans(ctx)
    services.sandboxes.death_hooks.append(lambda sandbox_id, reason: record_death(services.db, sandbox_id, reason))
    return ctx
