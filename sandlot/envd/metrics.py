"""``GET /metrics``: the sandbox's own usage, from its cgroup (v1) when visible, else /proc.

Under runc without a cgroup namespace the container's /sys/fs/cgroup/<controller> mount root
*is* its own cgroup, so the plain files there describe the sandbox. CPU percentage is a real
delta: against the previous call if it is recent, otherwise over a short fresh sample.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

CG = "/sys/fs/cgroup"
SAMPLE_SECONDS = 0.1
MAX_REUSE_AGE = 10.0  # a previous sample older than this is too stale to diff against
UNLIMITED = 1 << 60


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_kv(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.replace(":", " ").split()
                if len(parts) >= 2 and parts[1].isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def cpu_count() -> int:
    """CPUs the sandbox may use: CFS quota if set, else the affinity mask."""
    try:
        n = len(os.sched_getaffinity(0))
    except OSError:
        n = os.cpu_count() or 1
    quota, period = _read_int(f"{CG}/cpu/cpu.cfs_quota_us"), _read_int(f"{CG}/cpu/cpu.cfs_period_us")
    if quota and period and quota > 0:
        n = min(n, max(1, math.ceil(quota / period)))
    return n


def _cpu_busy_seconds() -> tuple[float, float] | None:
    """(busy CPU-seconds, capacity CPU-seconds or None) — cgroup cpuacct, else /proc/stat."""
    ns = _read_int(f"{CG}/cpuacct/cpuacct.usage")
    if ns is not None:
        return ns / 1e9, -1.0  # capacity comes from wall time × cpu_count
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


class Metrics:
    def __init__(self) -> None:
        self._last: tuple[float, tuple[float, float]] | None = None  # (monotonic, sample)

    async def cpu_used_pct(self, ncpu: int) -> float:
        now = time.monotonic()
        prev = self._last
        if prev is None or not (SAMPLE_SECONDS / 2 <= now - prev[0] <= MAX_REUSE_AGE):
            first = _cpu_busy_seconds()
            if first is None:
                return 0.0
            prev = (now, first)
            await asyncio.sleep(SAMPLE_SECONDS)
            now = time.monotonic()
        cur = _cpu_busy_seconds()
        if cur is None:
            return 0.0
        self._last = (now, cur)
        busy = cur[0] - prev[1][0]
        if cur[1] < 0:  # cgroup: capacity = elapsed wall time on every allowed CPU
            capacity = (now - prev[0]) * ncpu
        else:
            capacity = cur[1] - prev[1][1]
        if capacity <= 0:
            return 0.0
        return round(min(max(busy / capacity * 100.0, 0.0), 100.0), 2)

    async def snapshot(self) -> dict[str, Any]:
        ncpu = cpu_count()
        pct = await self.cpu_used_pct(ncpu)
        total, used, cache = memory()
        vfs = os.statvfs("/")
        disk_total = vfs.f_blocks * vfs.f_frsize
        disk_used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        return {
            "ts": int(time.time()), "cpu_count": ncpu, "cpu_used_pct": pct,
            "mem_total": total, "mem_used": used, "mem_cache": cache,
            "mem_total_mib": total >> 20, "mem_used_mib": used >> 20,
            "disk_used": disk_used, "disk_total": disk_total,
        }


def memory() -> tuple[int, int, int]:
    """(total, used, cache) in bytes; used excludes reclaimable page cache like `free` does."""
    info = _read_kv("/proc/meminfo")
    host_total = info.get("MemTotal", 0) * 1024
    usage = _read_int(f"{CG}/memory/memory.usage_in_bytes")
    if usage is not None:
        limit = _read_int(f"{CG}/memory/memory.limit_in_bytes") or UNLIMITED
        stat = _read_kv(f"{CG}/memory/memory.stat")
        total = min(limit, host_total) if host_total else limit
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        cache = stat.get("total_cache", stat.get("cache", 0))
        used = max(usage - inactive, 0)
        if limit < UNLIMITED and limit < host_total or not host_total:
            return total, min(used, total), cache
        # Root / unlimited cgroup (dev host): the machine-wide view is the meaningful one.
    total = host_total
    used = total - info.get("MemAvailable", info.get("MemFree", 0)) * 1024
    cache = (info.get("Cached", 0) + info.get("Buffers", 0)) * 1024
    return total, max(used, 0), cache
