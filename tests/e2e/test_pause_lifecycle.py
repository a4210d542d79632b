"""autoPause at timeout, autoResume through the front door, pause failures (issue 4)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox

from sandlot import ids
from tests.e2e.server import data_dir, Server, unique_instance, unique_subnet


def _kill_all(srv: Server) -> None:
    """Sandboxes outlive their server by design: a failing test must not leave any."""
    if srv.process is None:
        return
    headers = {"X-API-Key": srv.api_key}
    for item in httpx.get(f"{srv.url}/v2/sandboxes", headers=headers, timeout=30).json():
        httpx.delete(f"{srv.url}/sandboxes/{item['sandboxID']}", headers=headers, timeout=60)


def _wait_state(sbx_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Sandbox.get_info(sbx_id).state == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"{sbx_id} never became {state}")


def test_auto_pause_then_auto_resume_keeps_memory(server: Server) -> None:
    sbx = Sandbox.create(timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        info = sbx.get_info()
        assert info.lifecycle == {"autoResume": True, "onTimeout": "pause"} or getattr(info, "lifecycle", None)
        sbx.commands.run("python3 -c 'import time\nwhile True: time.sleep(1)' & echo $! > /tmp/pid", timeout=10)
        pid = sbx.commands.run("cat /tmp/pid").stdout.strip()
        _wait_state(sbx.sandbox_id, "paused")
        # traffic through the front door resumes it transparently, processes kept
        out = sbx.commands.run(f"test -d /proc/{pid} && echo alive").stdout.strip()
        assert out == "alive"
        assert Sandbox.get_info(sbx.sandbox_id).state == "running"
    finally:
        sbx.kill()


def test_auto_pause_filesystem_only(server: Server) -> None:
    sbx = Sandbox.create(timeout=3, lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}})
    try:
        sbx.files.write("/home/user/f.txt", "disk")
        sbx.commands.run("sleep 999", background=True)
        _wait_state(sbx.sandbox_id, "paused")
        # no autoResume: the front door does not wake it
        r = httpx.get(f"{server.url}/health", headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
        assert r.status_code == 502
        same = Sandbox.connect(sbx.sandbox_id, timeout=60)
        assert same.files.read("/home/user/f.txt") == "disk"
        assert "sleep 999" not in same.commands.run("ps ax").stdout
    finally:
        sbx.kill()


def test_auto_resume_needs_memory_pause(server: Server) -> None:
    r = httpx.post(f"{server.url}/v2/sandboxes", headers={"X-API-Key": server.api_key},
                   json={"templateID": "base", "autoPause": True, "autoPauseMemory": False,
                         "autoResume": {"enabled": True}})
    assert r.status_code == 400 and r.json()["code"] == 400


@pytest.mark.asyncio
async def test_async_auto_pause(server: Server) -> None:
    sbx = await AsyncSandbox.create(timeout=3, lifecycle={"on_timeout": "pause"})
    try:
        await sbx.commands.run("echo 7 > /tmp/seven")
        deadline = time.monotonic() + 30
        while (await sbx.get_info()).state != "paused":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        same = await AsyncSandbox.connect(sbx.sandbox_id)
        assert (await same.commands.run("cat /tmp/seven")).stdout.strip() == "7"
    finally:
        await sbx.kill()


@pytest.mark.slow
def test_failed_checkpoint_and_full_disk_keep_sandbox_running(tmp_path: Path) -> None:
    instance = unique_instance("d")
    rundir = (data_dir() / "runtime") / instance
    rundir.mkdir(parents=True, exist_ok=True)
    # the sandboxes' disks (and their checkpoints) live on a small tmpfs this test owns
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(rundir)], check=True)
    srv = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=instance, subnet=unique_subnet(3),
                 extra_env={"SANDLOT_CHECKPOINT_MIN_FREE_MB": "-100000",
                            "SANDLOT_HOT_PAUSE_S": "0"})   # the CRIU dump is what meets the full disk
    try:
        srv.start()
        headers = {"X-API-Key": srv.api_key}
        sid = httpx.post(f"{srv.url}/v2/sandboxes", json={"templateID": "base", "timeout": 120},
                         headers=headers, timeout=60).json()["sandboxID"]
        sbx = Sandbox.connect(sid, api_key=srv.api_key, api_url=srv.url, sandbox_url=srv.url)
        sbx.commands.run("python3 -c 'import time\nwhile True: time.sleep(1)'", background=True)
        # fill the host side (the sandbox's own disk is an image with its own size limit)
        filler = rundir / "filler"
        subprocess.run(["fallocate", "-l", str(shutil.disk_usage(rundir).free - 2**20), str(filler)], check=True)
        r = httpx.post(f"{srv.url}/sandboxes/{sid}/pause", headers=headers, timeout=60)
        assert r.status_code == 507, r.text
        assert "keeps running" in r.json()["message"]
        assert sbx.commands.run("echo still-here").stdout.strip() == "still-here"
        assert httpx.get(f"{srv.url}/sandboxes/{sid}", headers=headers).json()["state"] == "running"
        # with space again, the pause works
        filler.unlink()
        r = httpx.post(f"{srv.url}/sandboxes/{sid}/pause", headers=headers, timeout=60)
        assert r.status_code == 204, r.text
        r = httpx.post(f"{srv.url}/v2/sandboxes/{sid}/connect", json={}, headers=headers, timeout=60)
        assert r.status_code == 201
        assert httpx.delete(f"{srv.url}/sandboxes/{sid}", headers=headers, timeout=60).status_code == 204
    finally:
        _kill_all(srv)
        srv.stop()
        subprocess.run(["umount", str(rundir)], check=False)


@pytest.mark.slow
def test_injected_checkpoint_failure_keeps_sandbox(tmp_path: Path) -> None:
    srv = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("e"), subnet=unique_subnet(4),
                 extra_env={"SANDLOT_FAILPOINTS": "pause-fail"})
    try:
        srv.start()
        headers = {"X-API-Key": srv.api_key}
        sid = httpx.post(f"{srv.url}/v2/sandboxes", json={"templateID": "base"}, headers=headers, timeout=60).json()["sandboxID"]
        r = httpx.post(f"{srv.url}/sandboxes/{sid}/pause", headers=headers, timeout=60)
        assert r.status_code == 500 and "keeps running" in r.json()["message"]
        sbx = Sandbox.connect(sid, api_key=srv.api_key, api_url=srv.url, sandbox_url=srv.url)
        assert sbx.commands.run("echo ok").stdout.strip() == "ok"
        sbx.kill()
    finally:
        _kill_all(srv)
        srv.stop()


@pytest.mark.slow
def test_paused_ttl_deletes_old_paused_sandboxes(tmp_path: Path) -> None:
    """SANDLOT_PAUSED_TTL_S: an operator's retention for paused sandboxes (default: forever)."""
    srv = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("p"), subnet=unique_subnet(11),
                 extra_env={"SANDLOT_PAUSED_TTL_S": "3", "SANDLOT_HOT_PAUSE_S": "0"})   # a CRIU pause
    srv.start()
    opts = {"api_key": srv.api_key, "api_url": srv.url, "sandbox_url": srv.url}
    try:
        old = Sandbox.create(timeout=120, **opts)
        old.pause()
        sandbox_dir = (data_dir() / "runtime") / srv.instance / "sandboxes" / old.sandbox_id
        assert (sandbox_dir / "checkpoint").is_dir()
        running = Sandbox.create(timeout=120, **opts)
        deadline = time.monotonic() + 20
        while old.sandbox_id in [s.sandbox_id for s in Sandbox.list(**opts).next_items()]:
            assert time.monotonic() < deadline, "the paused sandbox outlived SANDLOT_PAUSED_TTL_S"
            time.sleep(0.5)
        assert not sandbox_dir.exists()
        assert running.is_running()   # running sandboxes are not affected
        running.kill()
    finally:
        srv.stop()
