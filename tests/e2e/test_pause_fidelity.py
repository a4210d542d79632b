"""Pause details the unmodified SDK can see (issue 15), on real containers: ``pause(strict=True)``
refuses a hung guest agent (``ServiceBusyException``), a memory pause of one is marked
(``envd_unresponsive_at_pause``) and resumes only with ``on_resume="reboot"`` (a plain connect
raises ``GuestUnresponsiveException``), ``get_info().network``, and the fork count limit.

The guest agent is made unresponsive from the host: an nft rule in the sandbox's own network
namespace drops what reaches envd's port, so envd's ``/health`` goes unanswered while the
sandbox and envd live on, as with a hung agent in a VM. (Not SIGSTOP: envd is the container's
pid 1, and a stopped task in a frozen cgroup-v1 freezer hangs CRIU's ptrace attach, measured:
the pause's dump never ended until the cgroup was thawed by hand. Not a server failpoint: that
would fake the probe instead of exercising it.) The netns outlives a pause, so the rule is
removed in ``finally``, before a reboot resume needs envd to answer again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, GuestUnresponsiveException, Sandbox, ServiceBusyException

from tests.e2e.server import Server
from tests.e2e.test_js_sdk import JS_DIR, _node_major

BOOT_ID = "/proc/sys/kernel/random/boot_id"
ENVD_PORT = 49983
TABLE = "sandlot_test_hung_envd"


def _netns_path(server: Server, sandbox_id: str) -> str:
    state = json.loads(subprocess.run(["runc", "--root", str(server.workdir / "run" / "runc"), "state", sandbox_id],
                                      capture_output=True, text=True, check=True).stdout)
    config = json.loads((Path(state["bundle"]) / "config.json").read_text())
    paths = [ns["path"] for ns in config["linux"]["namespaces"] if ns["type"] == "network"]
    assert paths and paths[0].startswith("/")
    return str(paths[0])


def _nft(netns: str, *args: str) -> None:
    subprocess.run(["nsenter", f"--net={netns}", "nft", *args], check=True, capture_output=True)


@contextmanager
def _envd_unreachable(server: Server, sandbox_id: str) -> Iterator[None]:
    netns = _netns_path(server, sandbox_id)
    _nft(netns, "add", "table", "inet", TABLE)
    try:
        _nft(netns, "add", "chain", "inet", TABLE, "in", "{ type filter hook input priority -300 ; }")
        _nft(netns, "add", "rule", "inet", TABLE, "in", "tcp", "dport", str(ENVD_PORT), "drop")
        yield
    finally:
        _nft(netns, "delete", "table", "inet", TABLE)


def test_strict_pause_refuses_a_hung_guest_and_the_sandbox_keeps_running(server: Server) -> None:
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.commands.run("echo before > /home/user/state.txt")
        with _envd_unreachable(server, sbx.sandbox_id):
            with pytest.raises(ServiceBusyException):
                sbx.pause(strict=True)
            with pytest.raises(ServiceBusyException):   # filesystem-only always needs the agent
                sbx.pause(mode="filesystem")
            assert sbx.get_info().state == "running"
        # nothing was lost: the same processes answer again
        assert sbx.commands.run("cat /home/user/state.txt").stdout == "before\n"
        assert sbx.pause(strict=True) is True   # with the agent answering, strict pauses
        info = sbx.get_info()
        assert info.state == "paused" and info.envd_unresponsive_at_pause is None
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.commands.run("cat /home/user/state.txt").stdout == "before\n"
    finally:
        sbx.kill()


def test_memory_pause_of_a_hung_guest_resumes_only_by_reboot(server: Server) -> None:
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.files.write("/home/user/kept.txt", "on disk")
        sbx.commands.run("sleep 1000", background=True)
        boot_id = sbx.files.read(BOOT_ID).strip()
        with _envd_unreachable(server, sbx.sandbox_id):
            assert sbx.pause() is True   # the memory snapshot is taken anyway, and marked
        info = sbx.get_info()
        assert info.state == "paused" and info.envd_unresponsive_at_pause is True
        listed = [s for s in Sandbox.list().next_items() if s.sandbox_id == sbx.sandbox_id]
        assert [s.envd_unresponsive_at_pause for s in listed] == [True]

        with pytest.raises(GuestUnresponsiveException) as refused:
            Sandbox.connect(sbx.sandbox_id)
        assert refused.value.status_code == 409
        assert sbx.get_info().state == "paused"

        rebooted = Sandbox.connect(sbx.sandbox_id, on_resume="reboot")
        assert rebooted.files.read("/home/user/kept.txt") == "on disk"
        assert rebooted.files.read(BOOT_ID).strip() != boot_id   # a cold boot
        assert rebooted.commands.run("pgrep -x sleep || echo none").stdout.strip() == "none"
        info = rebooted.get_info()
        assert info.state == "running" and info.envd_unresponsive_at_pause is None
    finally:
        sbx.kill()


def test_reboot_resume_of_a_healthy_memory_pause_and_async_strict_pause(server: Server) -> None:
    async def scenario() -> None:
        sbx = await AsyncSandbox.create(timeout=300)
        try:
            boot_id = (await sbx.files.read(BOOT_ID)).strip()
            with _envd_unreachable(server, sbx.sandbox_id):
                with pytest.raises(ServiceBusyException):
                    await sbx.pause(strict=True)
            assert (await sbx.get_info()).state == "running"
            assert await sbx.pause() is True
            assert (await sbx.get_info()).envd_unresponsive_at_pause is None
            # a healthy memory image, but the caller asks for a reboot: a cold boot from disk
            rebooted = await AsyncSandbox.connect(sbx.sandbox_id, on_resume="reboot")
            assert (await rebooted.files.read(BOOT_ID)).strip() != boot_id
            assert (await rebooted.commands.run("echo up")).stdout == "up\n"
        finally:
            await sbx.kill()

    asyncio.run(scenario())


def test_async_memory_pause_of_a_hung_guest_needs_reboot(server: Server) -> None:
    async def scenario() -> None:
        sbx = await AsyncSandbox.create(timeout=300)
        try:
            await sbx.files.write("/home/user/kept.txt", "async")
            with _envd_unreachable(server, sbx.sandbox_id):
                assert await sbx.pause() is True
            assert (await sbx.get_info()).envd_unresponsive_at_pause is True
            with pytest.raises(GuestUnresponsiveException):
                await AsyncSandbox.connect(sbx.sandbox_id)
            rebooted = await AsyncSandbox.connect(sbx.sandbox_id, on_resume="reboot")
            assert await rebooted.files.read("/home/user/kept.txt") == "async"
        finally:
            await sbx.kill()

    asyncio.run(scenario())


def test_get_info_reports_network(server: Server) -> None:
    sbx = Sandbox.create(timeout=60, network={"allow_out": ["1.1.1.1"], "deny_out": ["0.0.0.0/0"],
                                              "allow_public_traffic": False})
    closed = Sandbox.create(timeout=60, allow_internet_access=False)
    try:
        network = sbx.get_info().network
        assert network is not None
        assert network.get("allow_out") == ["1.1.1.1"] and network.get("deny_out") == ["0.0.0.0/0"]
        assert network.get("allow_public_traffic") is False
        closed_network = closed.get_info().network
        assert closed_network is not None and closed_network.get("deny_out") == ["0.0.0.0/0"]
    finally:
        sbx.kill()
        closed.kill()


def test_fork_count_limit_is_100(sandbox: Sandbox, server: Server) -> None:
    """The Python SDK checks 20 before sending; the API (and the JS SDK, which doesn't) allows 100.
    Forking 21+ real containers is too heavy for this machine: the in-process tests count them."""
    response = httpx.post(f"{server.url}/sandboxes/{sandbox.sandbox_id}/fork", json={"count": 101},
                          headers={"X-API-Key": server.api_key}, timeout=60)
    assert response.status_code == 400
    assert response.json() == {"code": 400, "message": "Invalid count 101: fork between 1 and 100 sandboxes"}
    forks = sandbox.fork(count=1)
    try:
        assert len(forks) == 1 and isinstance(forks[0], Sandbox)
        assert forks[0].commands.run("echo fork").stdout == "fork\n"
    finally:
        for fork in forks:
            if isinstance(fork, Sandbox):
                fork.kill()


@pytest.mark.slow
@pytest.mark.skipif(_node_major() < 20, reason="the e2b npm package needs Node >= 20")
def test_js_sdk_reboot_network_and_fork_count(server: Server) -> None:
    assert (JS_DIR / "node_modules" / "e2b").is_dir(), "run `make test` (it installs tests/js/node_modules)"
    env = dict(os.environ, E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.api_key)
    result = subprocess.run(["node", "--test", "--test-reporter=spec", "pause_fidelity.test.mjs"], cwd=JS_DIR,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
