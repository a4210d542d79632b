"""Periodic samples of every running sandbox's usage, kept for the sandbox's life.

E2B's ``GET /sandboxes/{id}/metrics`` returns a time series; we sample cgroup
counters every few seconds (off the event loop) and keep a bounded ring.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import structlog

from sandlot.runtime.base import Runtime
from sandlot.runtime.usage import Usage

log = structlog.get_logger("sandlot.metrics")


@dataclass(frozen=True)
class Sample:
    timestamp: datetime
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int

    def to_json(self) -> dict[str, object]:
        return {
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "timestampUnix": int(self.timestamp.timestamp()),
            "cpuCount": self.cpu_count,
            "cpuUsedPct": round(self.cpu_used_pct, 2),
            "memUsed": self.mem_used,
            "memTotal": self.mem_total,
            "memCache": self.mem_cache,
            "diskUsed": self.disk_used,
            "diskTotal": self.disk_total,
        }


@dataclass
class _Series:
    cpu_count: int
    disk_total: int
    last: Usage | None = None
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=20_000))


class MetricsSampler:
    def __init__(self, runtime: Runtime, interval_s: float = 5.0) -> None:
        self.runtime = runtime
        self.interval_s = interval_s
        self._series: dict[str, _Series] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, sandbox_id: str, cpu_count: int, disk_total: int) -> None:
        self._series.setdefault(sandbox_id, _Series(cpu_count, disk_total))

    def forget(self, sandbox_id: str) -> None:
        self._series.pop(sandbox_id, None)

    def _sample_one(self, sandbox_id: str, series: _Series) -> Sample | None:
        usage = self.runtime.usage(sandbox_id)
        if usage is None:
            return None
        pct = 0.0
        if series.last is not None and usage.taken_at > series.last.taken_at:
            elapsed_ns = (usage.taken_at - series.last.taken_at) * 1e9
            pct = max(0.0, (usage.cpu_ns - series.last.cpu_ns) / (elapsed_ns * max(1, series.cpu_count)) * 100)
        series.last = usage
        sample = Sample(
            timestamp=datetime.now(timezone.utc),
            cpu_count=series.cpu_count,
            cpu_used_pct=min(pct, 100.0),
            mem_used=usage.mem_used,
            mem_total=usage.mem_total,
            mem_cache=usage.mem_cache,
            disk_used=usage.disk_used,
            disk_total=series.disk_total,
        )
        series.samples.append(sample)
        return sample

    async def sample_now(self, sandbox_id: str) -> Sample | None:
        series = self._series.get(sandbox_id)
        if series is None:
            return None
        return await asyncio.to_thread(self._sample_one, sandbox_id, series)

    def series(self, sandbox_id: str, start: datetime | None = None, end: datetime | None = None) -> list[Sample]:
        series = self._series.get(sandbox_id)
        if series is None:
            return []
        return [
            s for s in series.samples if (start is None or s.timestamp >= start) and (end is None or s.timestamp <= end)
        ]

    def latest(self, sandbox_id: str) -> Sample | None:
        series = self._series.get(sandbox_id)
        return series.samples[-1] if series and series.samples else None

    async def _tick(self) -> None:
        for sandbox_id, series in list(self._series.items()):
            try:
                await asyncio.to_thread(self._sample_one, sandbox_id, series)
            except Exception:  # one bad sandbox must not stop sampling the rest
                log.exception("metrics sample failed", sandbox_id=sandbox_id)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self._tick()
            await asyncio.sleep(max(0.1, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
