"""Stopped tasks (``kill -STOP``, a shell's ^Z) and CRIU's dump of a frozen sandbox.

CRIU's ptrace attach to a task that is group-stopped waits for that task to run and re-trap;
in a frozen cgroup-v1 freezer it never runs, so the dump hangs until someone thaws the cgroup
(measured: ``criu dump`` sat in ``ptrace_attach`` for minutes, holding the sandbox's lock and
the reaper behind it, until ``runc resume`` by hand). Any tenant can stop its own processes, so:

* before freezing, a sandbox with a stopped task is refused (:func:`stopped_in`; once frozen,
  a stopped task reads as ``D``, so this can only be asked before);
* a task stopped in the instant between that check and the freeze is caught while CRIU runs
  (:func:`watch_attach`): CRIU seen in ``ptrace_attach`` for a while → the cgroup is thawed,
  which lets the attach finish and the dump fail, and the sandbox keeps running.

Only kernel-made files under ``/proc`` and the sandbox's own cgroup dir are read, by integer
pid: nothing the tenant names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

MESSAGE = ("a process in the sandbox is stopped (SIGSTOP/SIGTSTP), which its memory cannot be "
           "saved with; continue it (kill -CONT) and retry")


def _state(tid: int) -> str | None:
    try:
        stat = Path(f"/proc/{tid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0] if fields else None


def stopped_in(cgroup_dir: Path) -> list[int]:
    """Tasks of the (not yet frozen) cgroup tree that are group-stopped (state ``T``)."""
    stopped = []
    for tasks in cgroup_dir.rglob("tasks"):
        try:
            tids = [int(t) for t in tasks.read_text().split()]
        except (OSError, ValueError):
            continue
        stopped += [tid for tid in tids if _state(tid) == "T"]
    return stopped


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def _in_attach(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip() == "ptrace_attach"
    except OSError:
        return False


async def watch_attach(runc_pid: int, thaw: Callable[[], Awaitable[None]], *, poll_s: float = 0.25,
                       patience: int = 8) -> bool:
    """Until cancelled: thaw (once) when a CRIU under ``runc_pid`` sits in ``ptrace_attach`` for
    ``patience`` polls in a row; whether it did. (A healthy attach takes microseconds.)"""
    stuck = 0
    while True:
        await asyncio.sleep(poll_s)
        if any(_in_attach(p) for p in _descendants(runc_pid)):
            stuck += 1
            if stuck >= patience:
                await thaw()
                return True
        else:
            stuck = 0
