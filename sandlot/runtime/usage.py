"""Resource usage of one sandbox, read from its cgroup v1 counters and its disk layer.

The control plane samples these periodically (E2B's ``GET /sandboxes/{id}/metrics``);
reading is cheap (a handful of small files) except the disk walk, which is bounded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sandlot.runtime import cgroups


@dataclass(frozen=True)
class Usage:
    taken_at: float
    """``time.monotonic()`` of the reading, for rates."""
    cpu_ns: int
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _memory_stat(sandbox_id: str, parent: str) -> dict[str, int]:
    raw = cgroups.read("memory", sandbox_id, "memory.stat", parent) or ""
    stats: dict[str, int] = {}
    for line in raw.splitlines():
        key, _, value = line.partition(" ")
        stats[key] = _int(value)
    return stats


def dir_size(root: Path, max_entries: int = 200_000) -> int:
    """Bytes allocated under ``root`` (like ``du``), giving up after ``max_entries`` entries."""
    total = 0
    seen = 0
    stack = [str(root)]
    while stack and seen < max_entries:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def read_usage(sandbox_id: str, parent: str, upper_dir: Path | None, disk_used: int | None = None) -> Usage | None:
    """Current usage, or ``None`` when the sandbox's cgroups are gone; ``disk_used`` when
    known cheaply (a disk image's statvfs), else the upper dir is walked."""
    usage = cgroups.read("memory", sandbox_id, "memory.usage_in_bytes", parent)
    if usage is None:
        return None
    stats = _memory_stat(sandbox_id, parent)
    limit = _int(cgroups.read("memory", sandbox_id, "memory.limit_in_bytes", parent))
    cache = stats.get("total_cache", stats.get("cache", 0))
    inactive_file = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return Usage(
        taken_at=time.monotonic(),
        cpu_ns=_int(cgroups.read("cpuacct", sandbox_id, "cpuacct.usage", parent)),
        mem_used=max(0, _int(usage) - inactive_file),
        mem_total=limit,
        mem_cache=cache,
        disk_used=disk_used if disk_used is not None else dir_size(upper_dir) if upper_dir is not None else 0,
    )


def oom_killed(sandbox_id: str, parent: str) -> bool:
    """Whether the kernel's OOM killer struck inside the sandbox's memory cgroup."""
    raw = cgroups.read("memory", sandbox_id, "memory.oom_control", parent) or ""
    for line in raw.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return _int(value) > 0
    return False
