"""``stopped_tasks``: the hang it guards against, reproduced with the kernel's own pieces.

A task is stopped, its cgroup-v1 freezer frozen, and a child ``PTRACE_SEIZE``s it, as CRIU's dump
does: that child sits in ``ptrace_attach``. ``watch_attach`` sees it, thaws, and the attach ends.
Needs root and the v1 freezer (this host's setup); skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sandlot.runtime import stopped_tasks

FREEZER = Path("/sys/fs/cgroup/freezer")
SEIZE = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n"
    "rc = libc.ptrace(0x4206, int(sys.argv[1]), None, None)\n"   # PTRACE_SEIZE
    "sys.exit(0 if rc == 0 else 1)\n"
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not (FREEZER / "tasks").exists(),
                                reason="needs root and the cgroup-v1 freezer")


def _eventually(check: Callable[[], bool]) -> bool:
    for _ in range(100_000):
        if check():
            return True
        os.sched_yield()
    return check()


def test_a_frozen_stopped_task_hangs_a_seize_until_the_watchdog_thaws() -> None:
    group = FREEZER / f"sandlot-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    victim = subprocess.Popen(["sleep", "300"])
    seizer: asyncio.subprocess.Process | None = None
    try:
        (group / "tasks").write_text(str(victim.pid))
        os.kill(victim.pid, signal.SIGSTOP)
        assert _eventually(lambda: stopped_tasks.stopped_in(group) == [victim.pid])   # the stop lands async
        (group / "freezer.state").write_text("FROZEN")
        assert _eventually(lambda: (group / "freezer.state").read_text().strip() == "FROZEN")
        # once frozen, the stopped task no longer reads as stopped: why the check runs before
        assert stopped_tasks.stopped_in(group) == []

        async def run() -> bool:
            nonlocal seizer
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SEIZE, str(victim.pid))
            seizer = proc

            async def thaw() -> None:
                (group / "freezer.state").write_text("THAWED")

            # the watchdog looks below a parent, as below runc: this test process is the parent
            watch = asyncio.create_task(stopped_tasks.watch_attach(os.getpid(), thaw, poll_s=0.05, patience=4))
            rc = await proc.wait()
            thawed = await watch if watch.done() else False
            watch.cancel()
            assert rc == 0   # the seize went through once thawed
            return thawed

        assert asyncio.run(run()) is True
    finally:
        (group / "freezer.state").write_text("THAWED")
        victim.kill()
        victim.wait()
        if seizer is not None and seizer.returncode is None:
            seizer.kill()
        group.rmdir()


def test_a_running_sandbox_has_no_stopped_tasks(tmp_path: Path) -> None:
    group = FREEZER / f"sandlot-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    victim = subprocess.Popen(["sleep", "300"])
    try:
        (group / "tasks").write_text(str(victim.pid))
        assert stopped_tasks.stopped_in(group) == []
        assert stopped_tasks.stopped_in(tmp_path / "missing") == []
    finally:
        victim.kill()
        victim.wait()
        group.rmdir()
