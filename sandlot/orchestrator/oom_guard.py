"""Stop a sandbox's OOM storm from the host, so the sandbox survives its own fork bomb.

envd starts user processes at ``oom_score_adj`` 1000, so the kernel's OOM killer never picks
envd while user processes exist. But a fork bomb replaces each process the killer takes
faster than envd can allocate: envd waits in the memory cgroup's OOM path forever and the
sandbox stops answering (issue 12). The kernel cannot end that (cgroup v1 has no
``memory.oom.group``), envd cannot (it needs memory to act), so the host does: a memory
cgroup whose ``oom_kill`` counter grows by :data:`STORM_KILLS` within a tick is frozen,
the session holding the most processes (and any holding more than :data:`BIG_SESSION`) is
SIGKILLed, and the cgroup thawed. A second storm soon after kills every process but the
init. Every rescue is logged as a warning. docs/reliability.md has the measurements.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from sandlot.orchestrator.periodic import Periodic
from sandlot.runtime import cgroups
from sandlot.runtime.base import Runtime

log = structlog.get_logger(__name__)

TICK_S = 1.0
STORM_KILLS = 20
"""OOM kills within one tick that make a storm (a single big allocation is one kill)."""
BIG_SESSION = 64
REPEAT_WINDOW_S = 30.0
FREEZE_WAIT_S = 2.0


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the parenthesised comm: state ppid pgrp session ...
    return int(stat.rsplit(")", 1)[1].split()[3])


def _oom_kills(sandbox_id: str, parent: str) -> int | None:
    raw = cgroups.read("memory", sandbox_id, "memory.oom_control", parent)
    if raw is None:
        return None
    for line in raw.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


@contextlib.asynccontextmanager
async def _frozen(sandbox_id: str, parent: str) -> AsyncIterator[None]:
    """Freeze the sandbox (best effort: tasks stuck in the kernel may delay it) and thaw it after,
    unless someone else (a pause) had already frozen it."""
    state = cgroups.controller_dir("freezer", sandbox_id, parent) / "freezer.state"
    try:
        ours = state.read_text().strip() == "THAWED"
        if ours:
            state.write_text("FROZEN")
    except OSError:
        ours = False
    if ours:
        deadline = time.monotonic() + FREEZE_WAIT_S
        while time.monotonic() < deadline and state.read_text().strip() != "FROZEN":
            await asyncio.sleep(0.05)
    try:
        yield
    finally:
        if ours:
            with contextlib.suppress(OSError):
                state.write_text("THAWED")


async def rescue(runtime: Runtime, sandbox_id: str, parent: str, *, everything: bool) -> int:
    """SIGKILL the runaway processes of a sandbox (never its init); returns how many."""
    init = runtime.init_pid(sandbox_id)
    if init is None:
        return 0
    procs = cgroups.controller_dir("memory", sandbox_id, parent) / "cgroup.procs"
    killed: set[int] = set()
    doomed: set[int] | None = None  # session ids, chosen on the first pass
    async with _frozen(sandbox_id, parent):
        for _ in range(5):  # a straggler the freezer missed may have forked meanwhile
            try:
                pids = [int(p) for p in procs.read_text().split() if int(p) != init]
            except OSError:
                break
            sessions = {pid: _session_of(pid) for pid in pids}
            if doomed is None and not everything:
                counts = Counter(s for s in sessions.values() if s is not None)
                largest = counts.most_common(1)[0][0] if counts else None
                doomed = {s for s, n in counts.items() if s == largest or n > BIG_SESSION}
            targets = [p for p, s in sessions.items() if everything or (doomed and s in doomed)]
            if not targets:
                break
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed.update(targets)
            await asyncio.sleep(0.05)
    return len(killed)


class OomGuard(Periodic):
    """Watches every sandbox cgroup of this server's runtime for OOM storms."""

    every_s = TICK_S

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        # runc's cgroup layout; other runtimes have no guard
        self.parent: str | None = runtime.cgroup_parent
        self._last: dict[str, int] = {}
        self._rescued_at: dict[str, float] = {}
        self.rescues = 0

    def enabled(self) -> bool:
        return self.parent is not None

    async def tick(self) -> None:
        assert self.parent is not None
        seen = cgroups.stale_ids(self.parent)
        for sandbox_id in seen:
            kills = _oom_kills(sandbox_id, self.parent)
            if kills is None:
                continue
            before = self._last.get(sandbox_id, kills)
            self._last[sandbox_id] = kills
            if kills - before < STORM_KILLS:
                continue
            now = time.monotonic()
            everything = now - self._rescued_at.get(sandbox_id, -1e9) < REPEAT_WINDOW_S
            self._rescued_at[sandbox_id] = now
            n = await rescue(self.runtime, sandbox_id, self.parent, everything=everything)
            self.rescues += 1
            self._last[sandbox_id] = _oom_kills(sandbox_id, self.parent) or kills
            log.warning("sandbox OOM storm stopped: its runaway processes were killed so envd survives",
                        sandbox_id=sandbox_id, oom_kills=kills - before, killed=n,
                        scope="all user processes" if everything else "largest session")
        for gone in set(self._last) - seen:
            self._last.pop(gone, None)
            self._rescued_at.pop(gone, None)
