"""Notice a dead lxcfs and repair it under the running sandboxes (``runtime/lxcfs.py``).

lxcfs is one FUSE daemon for every sandbox; if it dies (killed, crashed, OOM), each
sandbox's ``/proc/meminfo``, ``/proc/cpuinfo``, ``/proc/uptime``… fail with ENOTCONN, and
``free``, ``top`` or a JVM sizing itself break until the sandbox is recreated. Every
:data:`CHECK_EVERY_S` the server reads one view; when it fails, lxcfs is restarted and the
views of this server's running sandboxes are swapped for live ones (or, if lxcfs cannot come
back, removed so the sandbox reads the host's files). Logged as a warning either way.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from sandlot.orchestrator.periodic import Periodic
from sandlot.runtime import cgroups, lxcfs
from sandlot.runtime.base import Runtime

log = structlog.get_logger("sandlot.lxcfs_watch")

CHECK_EVERY_S = 2.0


class LxcfsWatch(Periodic):
    every_s = CHECK_EVERY_S

    def __init__(self, path: Path, runtime: Runtime) -> None:
        super().__init__()
        self.path = path
        self.runtime = runtime
        self.parent: str | None = runtime.cgroup_parent
        self.repairs = 0
        self._lock = asyncio.Lock()

    def enabled(self) -> bool:
        return self.parent is not None and lxcfs.healthy(self.path)   # only a watch over a running lxcfs

    def _init_pids(self) -> list[int]:
        assert self.parent is not None
        pids = (self.runtime.init_pid(sid) for sid in cgroups.stale_ids(self.parent))
        return [pid for pid in pids if pid]

    async def check(self) -> None:
        """Repair a dead lxcfs (one repair at a time; a caller that waited finds it healthy)."""
        if self.parent is None or await asyncio.to_thread(lxcfs.healthy, self.path):
            return
        async with self._lock:
            if await asyncio.to_thread(lxcfs.healthy, self.path):
                return
            await self._repair()

    async def _repair(self) -> None:
        log.warning("lxcfs is dead: restarting it and repairing the sandboxes' /proc views", path=str(self.path))
        fixed, degraded = await asyncio.to_thread(lxcfs.repair, self.path, self._init_pids())
        self.repairs += 1
        log.warning("lxcfs repaired", live_views=fixed, host_views=degraded)

    tick = check
