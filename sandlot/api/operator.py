"""Operator-only API: the operator token check and ``GET /admin/status`` (what `sandlot status` prints).

Operator routes take ``X-Admin-Token`` (``SANDLOT_ADMIN_TOKEN``) or ``Authorization: Bearer``
with that token (what Prometheus' ``authorization`` scrape setting sends), compared in constant
time; an API key never opens them. Without a configured token they answer 403 saying how to turn
them on, so an operator who forgot it is told rather than shown a bare 404.

:func:`server_status` reads everything at call time (the store, the warm pool, the host), so
the numbers are the API's own: the ``/metrics`` collector (``prometheus.py``) uses it too.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import shutil
import socket
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from sandlot.api.errors import APIError
from sandlot.services import Services
from sandlot.store.models import Build, Sandbox

router = APIRouter()

STATES = ("creating", "running", "pausing", "paused", "resuming", "killing")
BUILD_STATUSES = ("waiting", "building", "ready", "error")
HOLDS_RESOURCES = ("creating", "running", "resuming", "pausing")
"""States whose sandboxes have processes, so their CPU and memory are committed."""


def require_operator(request: Request) -> None:
    """401/403 unless the request carries the configured operator token."""
    expected = request.app.state.services.settings.admin_token
    if not expected:
        raise APIError(403, "Operator endpoints are off: start the server with SANDLOT_ADMIN_TOKEN set and "
                            "send that token in the X-Admin-Token header")
    presented = request.headers.get("x-admin-token", "")
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if not presented and scheme.lower() == "bearer":   # Prometheus' `authorization:` scrape setting
        presented = credentials.strip()
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise APIError(401, "Missing or wrong operator token (X-Admin-Token or Authorization: Bearer)")


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    values[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def capacity(services: Services, used_slots: int) -> dict[str, Any]:
    """This host's CPU, memory, data-dir disk and sandbox address slots (a /30 per sandbox)."""
    settings = services.settings
    mem = _meminfo()
    try:
        disk = shutil.disk_usage(settings.data_dir)
        disk_total, disk_free = disk.total, disk.free
    except OSError:
        disk_total = disk_free = 0
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "node": socket.gethostname(),
        "cpus": os.cpu_count() or 0,
        "load": load,
        "memoryTotalBytes": mem.get("MemTotal", 0),
        "memoryAvailableBytes": mem.get("MemAvailable", 0),
        "diskTotalBytes": disk_total,
        "diskFreeBytes": disk_free,
        "sandboxSlots": ipaddress.ip_network(settings.sandbox_subnet, strict=False).num_addresses // 4,
        "sandboxSlotsUsed": used_slots,
    }


def server_status(services: Services, problems: Callable[[], list[str]]) -> dict[str, Any]:
    """Health, sandboxes by state, builds by status, warm pools and capacity, read now.

    Synchronous (it reads the store): call it from a worker thread."""
    with services.db.session() as session:
        by_state = {state: (count, cpus or 0, memory or 0) for state, count, cpus, memory in session.execute(
            select(Sandbox.state, func.count(), func.sum(Sandbox.cpu_count), func.sum(Sandbox.memory_mb))
            .group_by(Sandbox.state))}
        builds = dict(session.execute(select(Build.status, func.count()).group_by(Build.status)).all())
    depth = services.sandboxes.pool.depth()
    pools = [{"templateID": template_id, "buildID": build_id, "ready": ready, "booting": booting}
             for template_id, build_id, ready, booting in depth]
    live = sum(count for count, _, _ in by_state.values())
    pooled = sum(ready + booting for _, _, ready, booting in depth)
    held = [by_state.get(s, (0, 0, 0)) for s in HOLDS_RESOURCES]
    found = problems() if services.ready else ["starting"]
    return {
        "status": "starting" if not services.ready else "degraded" if found else "ok",
        "problems": found,
        "instance": services.settings.instance,
        "sandboxes": {state: by_state.get(state, (0, 0, 0))[0] for state in STATES},
        "committed": {"vcpus": sum(c for _, c, _ in held), "memoryMB": sum(m for _, _, m in held)},
        "builds": {status: int(builds.get(status, 0)) for status in sorted(set(BUILD_STATUSES) | set(builds))},
        "warmPools": pools,
        "warmPoolSize": services.settings.warm_pool_size,
        "capacity": capacity(services, live + pooled),
    }


@router.get("/admin/status", include_in_schema=False)
async def status(request: Request) -> dict[str, Any]:
    """Operator: the server's health, sandboxes, builds, warm pools and host capacity."""
    import asyncio

    require_operator(request)
    services: Services = request.app.state.services
    return await asyncio.to_thread(server_status, services, request.app.state.health_problems)
