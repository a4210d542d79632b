"""Hot pause (``SANDLOT_HOT_PAUSE_S``) with the real SDK: a memory pause freezes the sandbox (memory
kept, nothing runs), resume thaws it; a hot-paused sandbox survives a server restart; restarted
with ``SANDLOT_HOT_PAUSE_S=0`` it is cooled into a CRIU checkpoint and still resumes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from sandlot import ids
from tests.e2e.counter import read_count, start_counter
from tests.e2e.server import Server, data_dir, unique_instance, unique_subnet

pytestmark = pytest.mark.slow

HOLDER = ("import os, time\n"
          "secret = os.urandom(8).hex()\n"
          "open('/tmp/secret', 'w').write(secret)\n"
          "while True:\n"
          "    time.sleep(0.1)\n"
          "    if os.path.exists('/tmp/ask'):\n"
          "        open('/tmp/answer.tmp', 'w').write(secret)\n"
          "        os.replace('/tmp/answer.tmp', '/tmp/answer')\n"
          "        os.unlink('/tmp/ask')\n")
"""A variable held only in a running process's memory, told on request."""


@pytest.fixture(scope="module")
def hot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(workdir=tmp_path_factory.mktemp("hot"), api_key=ids.new_api_key(),
                    instance=unique_instance("o"), subnet=unique_subnet(),
                    extra_env={"SANDLOT_HOT_PAUSE_S": "600"})
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            headers = {"X-API-Key": server.api_key}
            for item in httpx.get(f"{server.url}/v2/sandboxes", headers=headers, timeout=30).json():
                httpx.delete(f"{server.url}/sandboxes/{item['sandboxID']}", headers=headers, timeout=60)
        server.reset()


def _opts(server: Server) -> dict[str, str]:
    return {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}


def _sandbox_dir(server: Server, sandbox_id: str) -> Path:
    return data_dir() / "runtime" / server.instance / "sandboxes" / sandbox_id


def _freezer(server: Server, sandbox_id: str) -> str:
    path = Path("/sys/fs/cgroup/freezer") / server.instance / sandbox_id / "freezer.state"
    return path.read_text().strip() if path.exists() else "gone"


def _ask_secret(sbx: Sandbox) -> str:
    sbx.commands.run("rm -f /tmp/answer && touch /tmp/ask")
    for _ in range(100):
        out = sbx.commands.run("cat /tmp/answer 2>/dev/null || true").stdout.strip()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError("the holder process did not answer")


def _prepare(sbx: Sandbox) -> str:
    start_counter(sbx)
    sbx.files.write("/tmp/holder.py", HOLDER)
    sbx.commands.run("python3 /tmp/holder.py", background=True)
    sbx.files.write("/tmp/note.txt", "kept in /tmp")
    for _ in range(100):
        secret = sbx.commands.run("cat /tmp/secret 2>/dev/null || true").stdout.strip()
        if secret:
            return secret
        time.sleep(0.1)
    raise AssertionError("the holder process did not start")


def _count_on_host(server: Server, sandbox_id: str) -> str:
    return (_sandbox_dir(server, sandbox_id) / "disk" / "upper" / "tmp" / "count").read_text()


def test_hot_pause_keeps_memory_and_nothing_runs(hot_server: Server) -> None:
    sbx = Sandbox.create(timeout=300, **_opts(hot_server))
    try:
        secret = _prepare(sbx)
        assert sbx.pause() is True
        info = Sandbox.get_info(sbx.sandbox_id, **_opts(hot_server))
        assert info.state == "paused"
        assert _freezer(hot_server, sbx.sandbox_id) == "FROZEN"
        assert not (_sandbox_dir(hot_server, sbx.sandbox_id) / "checkpoint").exists()   # no CRIU image
        # the counter writes its count every 50 ms while it runs: frozen, the file stays as it is
        before = _count_on_host(hot_server, sbx.sandbox_id)
        time.sleep(0.5)
        assert _count_on_host(hot_server, sbx.sandbox_id) == before
        # the front door answers as for any paused sandbox (no autoResume asked)
        r = httpx.get(f"{hot_server.url}/health",
                      headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
        assert r.status_code == 502
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=300, **_opts(hot_server))
        assert _freezer(hot_server, sbx.sandbox_id) == "THAWED"
        after = read_count(resumed)
        assert after >= int(before)   # carried on from memory, not restarted from 1
        assert _ask_secret(resumed) == secret
        assert resumed.files.read("/tmp/note.txt") == "kept in /tmp"
        deadline = time.monotonic() + 10
        while read_count(resumed) <= after:   # and it runs again
            assert time.monotonic() < deadline, "the counter did not run after the resume"
            time.sleep(0.1)
        # kill of a hot-paused sandbox: its frozen processes die, everything goes
        assert resumed.pause() is True
        assert Sandbox.kill(sbx.sandbox_id, **_opts(hot_server)) is True
        deadline = time.monotonic() + 30
        while _sandbox_dir(hot_server, sbx.sandbox_id).exists():
            assert time.monotonic() < deadline, "the killed hot-paused sandbox was not torn down"
            time.sleep(0.2)
        assert _freezer(hot_server, sbx.sandbox_id) == "gone"
    finally:
        Sandbox.kill(sbx.sandbox_id, **_opts(hot_server))


def test_hot_pause_survives_a_restart_then_cools_into_a_checkpoint(hot_server: Server) -> None:
    sbx = Sandbox.create(timeout=300, **_opts(hot_server))
    try:
        secret = _prepare(sbx)
        assert sbx.pause() is True
        hot_server.stop()
        hot_server.start()
        assert Sandbox.get_info(sbx.sandbox_id, **_opts(hot_server)).state == "paused"
        assert _freezer(hot_server, sbx.sandbox_id) == "FROZEN"   # not thawed by the recovery
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=300, **_opts(hot_server))
        assert _ask_secret(resumed) == secret
        n = read_count(resumed)
        assert n > 1

        # paused hot again, then a restart with hot pauses off: the cooler dumps it with CRIU
        assert resumed.pause() is True
        hot_server.stop()
        hot_server.extra_env["SANDLOT_HOT_PAUSE_S"] = "0"
        try:
            hot_server.start()
            checkpoint = _sandbox_dir(hot_server, sbx.sandbox_id) / "checkpoint"
            deadline = time.monotonic() + 120
            while not (checkpoint.is_dir() and _freezer(hot_server, sbx.sandbox_id) == "gone"):
                assert time.monotonic() < deadline, "the hot pause was not cooled into a checkpoint"
                time.sleep(0.5)
            assert Sandbox.get_info(sbx.sandbox_id, **_opts(hot_server)).state == "paused"
            cold = Sandbox.connect(sbx.sandbox_id, timeout=300, **_opts(hot_server))
            assert _ask_secret(cold) == secret
            assert read_count(cold) >= n
            assert cold.files.read("/tmp/note.txt") == "kept in /tmp"
        finally:
            hot_server.extra_env["SANDLOT_HOT_PAUSE_S"] = "600"
    finally:
        Sandbox.kill(sbx.sandbox_id, **_opts(hot_server))
