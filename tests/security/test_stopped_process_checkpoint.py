"""A tenant's stopped process cannot hang the server's checkpoints (pause, snapshot, fork).

Attack: ``kill -STOP`` one of the sandbox's own processes, then pause it (or let autoPause do it).
CRIU's ptrace attach to a task that is stopped inside a frozen cgroup-v1 freezer waits for that
task to run, which it never does: before the fix the dump hung until someone thawed the cgroup
by hand, holding the sandbox's lock — and the reaper, which awaits autoPauses one by one, with
it (every tenant's expired sandboxes stayed up). Now the frozen sandbox is checked for stopped
tasks first: the checkpoint is refused with a clear error and the sandbox is thawed, unchanged.

Canary: another tenant-visible sandbox is paused and resumed normally right after the attack,
and the attacker's stopped process is still stopped (the server did not meddle with it).
Legitimate feature: once the process is continued, the same pause works.
"""

from __future__ import annotations

import pytest
from e2b import Sandbox, SandboxException

from tests.e2e.server import Server

GUARD = {"request_timeout": 120}   # a regression fails here instead of hanging the session


def _stop_a_process(sbx: Sandbox) -> str:
    sbx.commands.run("sleep 1000", background=True)
    pid = sbx.commands.run("for i in $(seq 50); do p=$(pgrep -x sleep) && break; sleep 0.1; done; echo $p").stdout
    sbx.commands.run(f"kill -STOP {pid.strip()}")
    return pid.strip()


def _state(sbx: Sandbox, pid: str) -> str:
    return sbx.commands.run(f"awk '/^State/ {{print $2}}' /proc/{pid}/status").stdout.strip()


def test_a_stopped_process_cannot_hang_pause_snapshot_or_fork(server: Server) -> None:
    attacker = Sandbox.create(timeout=300)
    other = Sandbox.create(timeout=300)
    try:
        pid = _stop_a_process(attacker)
        assert _state(attacker, pid) == "T"
        with pytest.raises(SandboxException) as paused:
            attacker.pause(**GUARD)
        assert "stopped" in str(paused.value) and "keeps running" in str(paused.value)
        with pytest.raises(SandboxException) as snapped:
            attacker.create_snapshot(**GUARD)
        assert "stopped" in str(snapped.value)
        with pytest.raises(SandboxException) as forked:
            attacker.fork(**GUARD)
        assert "stopped" in str(forked.value)
        # the attacker's sandbox is running and thawed, its stopped process left as it was
        assert attacker.get_info().state == "running"
        assert attacker.commands.run("echo alive").stdout == "alive\n"
        assert _state(attacker, pid) == "T"

        # canary: the server still checkpoints everyone else
        assert other.pause(**GUARD) is True
        assert Sandbox.connect(other.sandbox_id).commands.run("echo back").stdout == "back\n"

        # legitimate: continued, the same sandbox pauses and resumes
        attacker.commands.run(f"kill -CONT {pid}")
        assert attacker.pause(**GUARD) is True
        resumed = Sandbox.connect(attacker.sandbox_id)
        assert _state(resumed, pid) in ("S", "R")   # the sleep survived the memory pause
    finally:
        attacker.kill()
        other.kill()
