"""Refuse new sandboxes, snapshots and builds before the host's disk fills up.

Sandbox disks are sparse ext4 images (``diskSizeMB`` each), so the data dir's filesystem is
overcommitted: ten 10 GiB sandboxes fit on a 50 GiB host until they are written to. When
the free space under the data dir drops below ``SANDLOT_DISK_MIN_FREE_MB``, every request
that would take more disk (create, fork, snapshot, template build, Prime create and image
build) answers 507 Insufficient Storage with a clear message, a warning is logged when the
floor is crossed (and when space comes back), and ``GET /health`` lists the problem.
Running sandboxes are left alone: they keep writing into the room the floor keeps.
"""
from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandlot.orchestrator.periodic import Periodic

log = structlog.get_logger("sandlot.disk_guard")

CHECK_EVERY_S = 5.0

GUARDED = re.compile(
    r"^/(?:v2/)?sandboxes$"
    r"|^/sandboxes/[^/]+/(?:snapshots|fork)$"
    r"|^/(?:v2/|v3/)?templates$"
    r"|^/(?:v2/)?templates/[^/]+/builds/[^/]+$"
    r"|^/api/v1/sandbox$"
    r"|^/api/v1/images/build(?:/[^/]+/start)?$"
)
"""POST routes that take new disk (E2B and Prime)."""


class DiskGuard(Periodic):
    every_s = CHECK_EVERY_S

    def __init__(self, data_dir: Path, min_free_mb: int) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.min_free = min_free_mb * 1024 * 1024
        self.free: int | None = None

    def check(self) -> int | None:
        """Re-read the free space (bytes); logs when the floor is crossed either way."""
        was_low = self.low
        try:
            self.free = shutil.disk_usage(self.data_dir).free
        except OSError:
            self.free = None
        if self.low and not was_low:
            log.warning("host disk nearly full: refusing new sandboxes, snapshots and builds (507)",
                        data_dir=str(self.data_dir), free_mb=self.free_mb, floor_mb=self.min_free >> 20)
        elif was_low and not self.low:
            log.info("host disk has room again: accepting new sandboxes and builds", free_mb=self.free_mb)
        return self.free

    @property
    def low(self) -> bool:
        return self.free is not None and self.free < self.min_free

    @property
    def free_mb(self) -> int | None:
        return None if self.free is None else self.free >> 20

    def problem(self) -> str | None:
        if not self.low:
            return None
        return (f"host disk nearly full: {self.free_mb} MiB free under {self.data_dir}, below the "
                f"{self.min_free >> 20} MiB floor (SANDLOT_DISK_MIN_FREE_MB); new sandboxes, snapshots "
                "and template builds are refused (507)")

    def start(self) -> None:
        self.check()
        super().start()

    async def tick(self) -> None:
        await asyncio.to_thread(self.check)


class DiskGuardMiddleware:
    """Answers 507 to disk-taking POSTs while the guard says the disk is low (checked afresh,
    so a request never waits for the next tick to be refused or let through)."""

    def __init__(self, app: ASGIApp, guard: DiskGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and GUARDED.match(scope["path"]):
            self.guard.check()
            problem = self.guard.problem()
            if problem is not None:
                message = f"Insufficient storage on this server: {problem}"
                if scope["path"].startswith("/api/v1/"):   # Prime's error shape
                    body: dict[str, object] = {"detail": message}
                else:
                    body = {"code": 507, "message": message}
                await JSONResponse(body, status_code=507)(scope, receive, send)
                return
        await self.app(scope, receive, send)
