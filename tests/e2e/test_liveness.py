"""A sandbox whose container dies on its own (its init killed, or OOM) is reported gone."""

from __future__ import annotations

import subprocess
import time

import pytest
from e2b import Sandbox
from e2b.exceptions import NotFoundException

from tests.e2e.server import Server


def _wait_gone(sbx: Sandbox, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sbx.get_info()
        except NotFoundException:
            break
        time.sleep(0.25)
    with pytest.raises(NotFoundException):
        sbx.get_info()
    assert not sbx.is_running()
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]


def test_dead_container_is_removed(server: Server) -> None:
    sbx = Sandbox.create()
    try:
        state = subprocess.run(
            ["runc", "--root", str(server.workdir / "run" / "runc"), "state", sbx.sandbox_id],
            capture_output=True, text=True, check=True,
        ).stdout
        init_pid = int(state.split('"pid":')[1].split(",")[0])
        subprocess.run(["kill", "-9", str(init_pid)], check=True)  # a crash, as seen from the host
        _wait_gone(sbx)
    finally:
        sbx.kill()


def test_oom_of_envd_is_reported(server: Server) -> None:
    sbx = Sandbox.create()
    try:
        # make envd (pid 1) the OOM killer's first choice, then exhaust the sandbox's memory
        sbx.commands.run(
            "echo 0 > /proc/self/oom_score_adj || { read a < /proc/1/oom_score_adj; echo $a > /proc/self/oom_score_adj; }; "  # as low as allowed
            "echo 1000 > /proc/1/oom_score_adj; python3 -c 'b = bytearray(2 * 1024 ** 3)'",
            user="root", background=True,
        )
        _wait_gone(sbx, seconds=30)
        tail = server.log_tail(400)
        assert "reason=oom" in tail or '"reason": "oom"' in tail   # console or JSON log lines
    finally:
        sbx.kill()
