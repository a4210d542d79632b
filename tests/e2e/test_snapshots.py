"""Snapshots and forks: new sandboxes continue from a running sandbox's memory (issue 4)."""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox

from tests.e2e.server import Server

STATEFUL = (
    "import http.server, threading\n"
    "state = {'n': 0, 'secret': open('/proc/sys/kernel/random/uuid').read().strip()}\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        state['n'] += 1\n"
    "        body = f\"{state['secret']} {state['n']}\".encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
)


def _hit(sbx: Sandbox) -> tuple[str, int]:
    secret, n = sbx.commands.run("curl -s localhost:8080/").stdout.split()
    return secret, int(n)


def _start_stateful(sbx: Sandbox) -> None:
    sbx.files.write("/tmp/stateful.py", STATEFUL)
    sbx.commands.run("python3 /tmp/stateful.py", background=True)
    for _ in range(100):
        if sbx.commands.run("curl -s localhost:8080/ || true").stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError("stateful server did not start")


def test_fork_shares_state_then_diverges(server: Server) -> None:
    src = Sandbox.create(timeout=300)
    forks: list[Sandbox] = []
    try:
        _start_stateful(src)
        secret, n = _hit(src)
        src.files.write("/home/user/shared.txt", "before fork")
        results = src.fork(count=3, timeout=120)
        assert all(isinstance(r, Sandbox) for r in results), results
        forks = list(results)
        ids = {f.sandbox_id for f in forks}
        assert len(ids) == 3 and src.sandbox_id not in ids
        for i, fork in enumerate(forks):
            fsecret, fn = _hit(fork)
            assert fsecret == secret          # same in-memory state as the source at the fork
            assert fn == n + 1
            assert fork.files.read("/home/user/shared.txt") == "before fork"
            # the disk copy keeps owners: the fork's user still owns its home and files
            assert fork.commands.run("stat -c %U /home/user /home/user/shared.txt && touch /home/user/t",
                                     user="user").stdout.split() == ["user", "user"]
            fork.files.write("/home/user/mine.txt", f"fork {i}")
        # they diverge: the source and each fork count on their own, files are separate
        _hit(forks[0])
        _hit(forks[0])
        assert _hit(forks[0])[1] == n + 4
        assert _hit(forks[1])[1] == n + 2
        assert _hit(src)[1] == n + 1
        assert forks[1].files.read("/home/user/mine.txt") == "fork 1"
        assert not src.files.exists("/home/user/mine.txt")
        # forks are full sandboxes with their own token
        assert forks[0]._envd_access_token != src._envd_access_token
        assert forks[0].get_info().state == "running"
    finally:
        for sbx in [src, *forks]:
            sbx.kill()


def test_snapshot_create_list_start_delete(server: Server) -> None:
    src = Sandbox.create(timeout=300)
    clone = None
    try:
        _start_stateful(src)
        secret, n = _hit(src)
        src.files.write("/home/user/snap.txt", "in snapshot")
        info = src.create_snapshot()
        assert info.snapshot_id
        # the source keeps running
        assert _hit(src) == (secret, n + 1)
        listed = [s.snapshot_id for s in Sandbox.list_snapshots(sandbox_id=src.sandbox_id).next_items()]
        assert info.snapshot_id in listed
        clone = Sandbox.create(info.snapshot_id, timeout=120)
        assert clone.sandbox_id != src.sandbox_id
        assert _hit(clone) == (secret, n + 1)
        assert clone.files.read("/home/user/snap.txt") == "in snapshot"
        assert Sandbox.delete_snapshot(info.snapshot_id) is True
        assert Sandbox.delete_snapshot(info.snapshot_id) is False
        # the clone does not depend on the snapshot once started
        assert _hit(clone)[1] == n + 2
    finally:
        src.kill()
        if clone is not None:
            clone.kill()


def test_fork_bad_count_and_unknown(server: Server) -> None:
    headers = {"X-API-Key": server.api_key}
    r = httpx.post(f"{server.url}/sandboxes/nosuch/fork", json={"count": 1}, headers=headers)
    assert r.status_code == 404 and r.json()["code"] == 404
    sbx = Sandbox.create(timeout=60)
    try:
        r = httpx.post(f"{server.url}/sandboxes/{sbx.sandbox_id}/fork", json={"count": 101}, headers=headers)
        assert r.status_code == 400 and "between 1 and 100" in r.json()["message"]
    finally:
        sbx.kill()


@pytest.mark.asyncio
async def test_async_fork(server: Server) -> None:
    src = await AsyncSandbox.create(timeout=120)
    forks = []
    try:
        await src.commands.run("echo pre > /tmp/x")
        forks = await src.fork(count=1)
        assert len(forks) == 1 and isinstance(forks[0], AsyncSandbox)
        assert (await forks[0].commands.run("cat /tmp/x")).stdout.strip() == "pre"
    finally:
        for sbx in [src, *forks]:
            await sbx.kill()
