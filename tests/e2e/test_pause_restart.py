"""kill -9 of the server: running sandboxes re-adopted, paused ones resumable, half-done pauses settled."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from sandlot import ids
from tests.e2e.counter import read_count, start_counter
from tests.e2e.server import data_dir, SANDLOT, Server, unique_instance, unique_subnet

pytestmark = pytest.mark.slow


def _kill9(server: Server) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    server.process = None


def _host_traces(instance: str) -> dict[str, int]:
    mounts = sum(1 for line in Path("/proc/self/mounts").read_text().splitlines() if f"/{instance}/" in line)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    cgroups = sum(1 for c in ("memory", "pids", "cpu", "freezer")
                  for p in (Path("/sys/fs/cgroup") / c / instance).glob("*") if p.is_dir())
    sdir = (data_dir() / "runtime") / instance / "sandboxes"
    dirs = len(list(sdir.iterdir())) if sdir.exists() else 0
    return {"mounts": mounts, "cgroups": cgroups, "dirs": dirs,
            "netns": sum(1 for ln in netns.splitlines() if ln.startswith(f"{instance}-"))}


def test_kill9_restart_readopts_running_and_paused(tmp_path: Path) -> None:
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("k"), subnet=unique_subnet(5))
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    created: list[str] = []
    try:
        running = Sandbox.create(timeout=300, **opts)
        created.append(running.sandbox_id)
        running.files.write("/home/user/r.txt", "running")
        bg = running.commands.run("sleep 600", background=True)
        paused = Sandbox.create(timeout=300, **opts)
        created.append(paused.sandbox_id)
        start_counter(paused)
        time.sleep(0.5)
        paused.pause()
        short = Sandbox.create(timeout=8, **opts)   # its timeout must still fire after the restart
        created.append(short.sandbox_id)

        _kill9(server)
        server.start()

        again = Sandbox.connect(running.sandbox_id, **opts)
        assert again.files.read("/home/user/r.txt") == "running"
        assert bg.pid in [p.pid for p in again.commands.list()]
        assert Sandbox.get_info(paused.sandbox_id, **opts).state == "paused"
        resumed = Sandbox.connect(paused.sandbox_id, **opts)
        n1 = read_count(resumed)
        time.sleep(0.3)
        assert read_count(resumed) > n1 > 1
        deadline = time.monotonic() + 30
        while short.sandbox_id in [s.sandbox_id for s in Sandbox.list(**opts).next_items()]:
            assert time.monotonic() < deadline, "timeout did not fire after restart"
            time.sleep(0.5)

        # a paused sandbox survives a second kill -9 too, and kill deletes its checkpoint
        resumed.pause()
        _kill9(server)
        server.start()
        assert Sandbox.kill(paused.sandbox_id, **opts) is True
        assert Sandbox.kill(running.sandbox_id, **opts) is True
    finally:
        if server.process is not None:
            for sid in created:
                httpx.delete(f"{server.url}/sandboxes/{sid}", headers={"X-API-Key": server.api_key}, timeout=60)
        server.stop()
    # checked after a clean stop: a running server keeps warm-pool sandboxes on purpose, and
    # those orphaned by each kill -9 must have been removed by the next start
    traces = _host_traces(server.instance)
    assert traces == {"mounts": 0, "cgroups": 0, "dirs": 0, "netns": 0}, traces


def test_interrupted_pause_is_settled_at_start(tmp_path: Path) -> None:
    """A crash mid-checkpoint (row 'pausing', container frozen) comes back running."""
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("i"), subnet=unique_subnet(6))
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    try:
        sbx = Sandbox.create(timeout=300, **opts)
        sbx.files.write("/home/user/x.txt", "x")
        _kill9(server)
        # simulate the crash window: state written, container frozen by the freezer, no image
        import sqlite3
        db = sqlite3.connect(tmp_path / "sandlot.db")
        db.execute("update sandboxes set state='pausing' where id=?", (sbx.sandbox_id,))
        db.commit()
        db.close()
        subprocess.run(["runc", "--root", str(tmp_path / "run" / "runc"), "pause", sbx.sandbox_id], check=True)
        partial = (data_dir() / "runtime") / server.instance / "sandboxes" / sbx.sandbox_id / "checkpoint.partial"
        partial.mkdir()
        server.start()
        assert Sandbox.get_info(sbx.sandbox_id, **opts).state == "running"
        again = Sandbox.connect(sbx.sandbox_id, **opts)
        assert again.files.read("/home/user/x.txt") == "x"
        assert not partial.exists()
        assert again.kill() is True
    finally:
        server.stop()


def test_reset_removes_a_dead_servers_sandboxes(tmp_path: Path) -> None:
    """`sandlot reset` after a kill -9: running and paused sandboxes, their netns, cgroups,
    mounts, disks and the nft table all go, and the store forgets them."""
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("z"), subnet=unique_subnet(8))
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    running = Sandbox.create(timeout=300, **opts)
    paused = Sandbox.create(timeout=300, **opts)
    paused.pause()
    _kill9(server)
    assert _host_traces(server.instance)["netns"] >= 2
    reset = subprocess.run([str(SANDLOT), "reset", "--yes"], env=server.env(), capture_output=True, text=True,
                           timeout=120)
    assert reset.returncode == 0, reset.stderr
    assert _host_traces(server.instance) == {"mounts": 0, "cgroups": 0, "dirs": 0, "netns": 0}
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"inet {server.instance}" not in tables
    server.start()
    try:
        assert Sandbox.list(**opts).next_items() == []
        for sbx in (running, paused):
            assert Sandbox.kill(sbx.sandbox_id, **opts) is False
    finally:
        server.stop()


def test_paused_sandbox_survives_a_host_reboot(tmp_path: Path) -> None:
    """A reboot empties /run (network namespaces, runc state) and unmounts the disk images;
    a paused sandbox still resumes, at its own IP, with its memory and files."""
    # a CRIU pause: a host reboot loses hot-paused sandboxes (their memory was never written)
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("h"), subnet=unique_subnet(12),
                    extra_env={"SANDLOT_HOT_PAUSE_S": "0"})
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    try:
        sbx = Sandbox.create(timeout=300, **opts)
        start_counter(sbx)
        sbx.files.write("/home/user/kept.txt", "kept")
        time.sleep(0.5)
        ip = sbx.commands.run("hostname -I").stdout.split()[0]
        sbx.pause()
        _kill9(server)
        sdir = (data_dir() / "runtime") / server.instance / "sandboxes" / sbx.sandbox_id
        netns = json.loads((sdir / "runtime.json").read_text())["netns"]
        subprocess.run(["ip", "netns", "del", netns], check=True)
        subprocess.run(["umount", str(sdir / "disk")], check=True)
        subprocess.run(["nft", "delete", "table", "inet", server.instance], check=True)
        shutil.rmtree(tmp_path / "run")   # SANDLOT_RUNTIME_STATE_DIR, a tmpfs after a reboot
        server.start()
        assert Sandbox.get_info(sbx.sandbox_id, **opts).state == "paused"
        # new sandboxes must not be handed the paused one's network slot meanwhile
        others = [Sandbox.create(timeout=120, **opts) for _ in range(3)]
        other_ips = {o.commands.run("hostname -I").stdout.split()[0] for o in others}
        assert ip not in other_ips, (ip, other_ips)
        resumed = Sandbox.connect(sbx.sandbox_id, **opts)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        assert resumed.commands.run("hostname -I").stdout.split()[0] == ip
        n1 = read_count(resumed)
        time.sleep(0.3)
        assert read_count(resumed) > n1 > 1
        assert all(o.commands.run("echo ok").stdout == "ok\n" for o in others)
        for o in [resumed, *others]:
            o.kill()
    finally:
        server.stop()
