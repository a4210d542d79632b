"""Crash safety: a failed create leaves no trace; a restarted server finds its sandboxes; a kill
answered before its teardown finishes it even across a crash."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from sandlot import ids
from tests.e2e.server import data_dir, Server, unique_instance, unique_subnet

pytestmark = pytest.mark.slow

POOL_SIZE = 4  # Settings.network_pool_size default


def _traces(server: Server, instance: str) -> dict[str, list[str]]:
    """Host resources a sandbox could leak, beyond the idle network pool."""
    runc_root = Path(server.workdir) / "run" / "runc"
    containers = sorted(p.name for p in runc_root.iterdir()) if runc_root.exists() else []
    sandboxes_dir = (data_dir() / "runtime") / instance / "sandboxes"
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines() if f"/runtime/{instance}/" in line]
    cgroups = []
    for controller in ("memory", "pids", "cpu", "freezer"):
        base = Path("/sys/fs/cgroup") / controller / instance
        if base.exists():
            cgroups += [f"{controller}/{p.name}" for p in base.iterdir() if p.is_dir()]
    return {
        "containers": containers,
        "mounts": mounts,
        "cgroups": cgroups,
        "dirs": sorted(p.name for p in sandboxes_dir.iterdir()) if sandboxes_dir.exists() else [],
    }


def _netns(instance: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(f"{instance}-")}


def test_failed_create_leaves_nothing_behind(tmp_path: Path, server: Server) -> None:
    faulty = Server(
        workdir=tmp_path,
        api_key=ids.new_api_key(),
        instance=unique_instance("f"),
        subnet=unique_subnet(1),
        extra_env={"SANDLOT_FAILPOINTS": "create-after-runtime", "SANDLOT_WARM_POOL_SIZE": "0"},
    )
    faulty.start()
    try:
        before = _traces(faulty, faulty.instance)
        netns_before = _netns(faulty.instance)
        response = httpx.post(
            f"{faulty.url}/v2/sandboxes", json={"templateID": "base"}, headers={"X-API-Key": faulty.api_key}, timeout=60
        )
        assert response.status_code == 500
        assert "injected failure" in response.json()["message"]
        after = _traces(faulty, faulty.instance)
        assert after["containers"] == before["containers"] == []
        assert after["cgroups"] == before["cgroups"]
        assert after["mounts"] == before["mounts"]
        assert after["dirs"] == before["dirs"]
        # the netns that was used is released (the pool may have refilled with fresh ones)
        listed = httpx.get(f"{faulty.url}/v2/sandboxes", headers={"X-API-Key": faulty.api_key}).json()
        assert listed == []
        # the failed sandbox's netns went back to the pool or away: never more than the pool holds
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_netns(faulty.instance)) > POOL_SIZE:
            time.sleep(0.2)
        assert len(_netns(faulty.instance)) <= POOL_SIZE, (netns_before, _netns(faulty.instance))
    finally:
        faulty.stop()
    assert not _netns(faulty.instance), "stopping the server drops its idle netns pool"


def test_restart_finds_sandboxes_again(tmp_path: Path) -> None:
    server = Server(
        workdir=tmp_path,
        api_key=ids.new_api_key(),
        instance=unique_instance("r"),
        subnet=unique_subnet(2),
    )
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    try:
        sbx = Sandbox.create(timeout=300, **opts)
        sbx.files.write("kept.txt", "still here")
        handle = sbx.commands.run("sleep 600", background=True)
        server.stop()
        server.start()
        again = Sandbox.connect(sbx.sandbox_id, **opts)
        assert again.files.read("kept.txt") == "still here"
        assert handle.pid in [p.pid for p in again.commands.list()]
        assert again.commands.run("echo alive").stdout == "alive\n"
        assert sbx.sandbox_id in [s.sandbox_id for s in Sandbox.list(**opts).next_items()]
        assert again.kill() is True
    finally:
        server.stop()


def test_a_kill_answered_before_its_teardown_leaves_nothing_even_across_a_crash(tmp_path: Path) -> None:
    """Issue 14: a kill answers once the sandbox is unrouted and its processes are SIGKILLed; its
    teardown (runc state, mounts, disk, cgroups, dir) runs after. A server killed -9 right after
    the answer, whatever the teardown had done by then, has it finished by the next start."""
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("k"),
                    subnet=unique_subnet(16), extra_env={"SANDLOT_WARM_POOL_SIZE": "0"})
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    try:
        before = _traces(server, server.instance)
        doomed = [Sandbox.create(timeout=120, **opts) for _ in range(2)]
        for sbx in doomed:
            sbx.commands.run("sleep 600", background=True)
        for sbx in doomed:
            assert sbx.kill() is True
        listed = {s.sandbox_id for s in Sandbox.list(**opts).next_items()}
        assert not listed & {s.sandbox_id for s in doomed}   # gone for the API at once
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)   # the teardowns may be half-way
        server.process.wait()
        server.process = None
        server.start()
        deadline = time.monotonic() + 60   # the start (or the reaper after it) finishes them
        while time.monotonic() < deadline and _traces(server, server.instance) != before:
            time.sleep(0.5)
        assert _traces(server, server.instance) == before
        assert len(_netns(server.instance)) <= POOL_SIZE
        listed = httpx.get(f"{server.url}/v2/sandboxes", headers={"X-API-Key": server.api_key}).json()
        assert listed == []
    finally:
        server.stop()
        server.reset()
