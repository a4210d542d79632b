"""Pause/resume with CRIU: memory, processes, files and the token survive (issue 4)."""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxQuery, SandboxState

from tests.e2e.counter import read_count, start_counter
from tests.e2e.server import Server



def _api(server: Server, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers={"X-API-Key": server.api_key}, timeout=120, **kw)


def test_memory_and_files_survive_two_pause_resume_cycles(server: Server) -> None:
    sbx = Sandbox.create(timeout=300)
    try:
        start_counter(sbx)
        time.sleep(0.5)
        token = sbx._envd_access_token
        files = []
        for cycle in range(2):
            sbx.files.write(f"/home/user/cycle{cycle}.txt", f"cycle {cycle}")
            files.append(f"/home/user/cycle{cycle}.txt")
            before = read_count(sbx)
            assert sbx.pause() is True
            assert sbx.get_info().state == "paused"
            assert [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()] == [sbx.sandbox_id]
            # already paused -> 409 -> False
            assert sbx.pause() is False
            resp = _api(server, "POST", f"/v2/sandboxes/{sbx.sandbox_id}/connect", json={"timeout": 300})
            assert resp.status_code == 201, resp.text
            assert resp.json()["envdAccessToken"] == token
            assert resp.json()["sandboxID"] == sbx.sandbox_id
            after = read_count(sbx)
            # CRIU restores the seccomp filter with the processes
            assert "Seccomp:\t2" in sbx.commands.run("cat /proc/self/status", user="root").stdout
            # the in-memory counter continues (no restart from 1)
            assert after >= before, (before, after)
            time.sleep(0.3)
            assert read_count(sbx) > after
            for path in files:
                assert sbx.files.read(path) == path.split("/")[-1].replace(".txt", "").replace("cycle", "cycle ")
        assert sbx.get_info().state == "running"
        # connect to a running sandbox answers 200
        assert _api(server, "POST", f"/v2/sandboxes/{sbx.sandbox_id}/connect", json={}).status_code == 200
    finally:
        sbx.kill()


def test_processes_servers_and_connect_pid_survive(server: Server) -> None:
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.commands.run("cd /tmp && echo hello-from-before > index.html && python3 -m http.server 8000",
                         background=True)
        proc = sbx.commands.run("for i in $(seq 1 1000); do echo line$i; sleep 0.1; done", background=True)
        for _ in range(50):
            if sbx.commands.run("curl -s localhost:8000/index.html || true").stdout.strip():
                break
            time.sleep(0.1)
        sbx.pause()
        same = Sandbox.connect(sbx.sandbox_id)
        assert same.commands.run("curl -s localhost:8000/index.html").stdout.strip() == "hello-from-before"
        # through the front door too
        host = same.get_host(8000)
        r = httpx.get(f"{server.url}/index.html", headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"})
        assert r.text.strip() == "hello-from-before", (host, r.text)
        handle = same.commands.connect(proc.pid)
        seen: list[str] = []
        deadline = time.monotonic() + 10
        for out, _err, _pty in handle:
            if out:
                seen.append(out)
            if len("".join(seen).split()) >= 3 or time.monotonic() > deadline:
                break
        assert any("line" in s for s in seen)
        assert proc.pid in [p.pid for p in same.commands.list()]
    finally:
        sbx.kill()


def test_kill_paused_and_unknown(server: Server) -> None:
    sbx = Sandbox.create(timeout=120)
    sbx.pause()
    assert Sandbox.kill(sbx.sandbox_id) is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    assert _api(server, "POST", "/sandboxes/nosuchsandbox/pause").status_code == 404
    resp = _api(server, "POST", "/v2/sandboxes/nosuchsandbox/connect", json={})
    assert resp.status_code == 404 and resp.json()["code"] == 404


def test_filesystem_only_pause_restarts_processes(server: Server) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        sbx.files.write("/home/user/keep.txt", "kept")
        sbx.commands.run("sleep 1000", background=True)
        resp = _api(server, "POST", f"/sandboxes/{sbx.sandbox_id}/pause", json={"memory": False})
        assert resp.status_code == 204, resp.text
        resp = _api(server, "POST", f"/sandboxes/{sbx.sandbox_id}/resume", json={"timeout": 60})
        assert resp.status_code == 201, resp.text
        same = Sandbox.connect(sbx.sandbox_id)
        assert same.files.read("/home/user/keep.txt") == "kept"
        assert "sleep 1000" not in same.commands.run("ps ax").stdout
    finally:
        sbx.kill()


def test_filesystem_only_resume_keeps_identity_of_warm_pool_sandboxes(server: Server) -> None:
    """A sandbox claimed from the warm pool booted with the pool's token and no env vars;
    after a reboot (filesystem-only resume) it must have its own token and envs again."""
    Sandbox.create(timeout=30).kill()   # the template is now wanted: its pool fills
    for _ in range(3):
        sbx = Sandbox.create(timeout=120, envs={"MARK": "mine"})
        try:
            resp = _api(server, "POST", f"/sandboxes/{sbx.sandbox_id}/pause", json={"memory": False})
            assert resp.status_code == 204, resp.text
            resp = _api(server, "POST", f"/sandboxes/{sbx.sandbox_id}/resume", json={"timeout": 60})
            assert resp.status_code == 201, resp.text
            same = Sandbox.connect(sbx.sandbox_id)
            assert same.commands.run("echo $MARK").stdout.strip() == "mine"
        finally:
            sbx.kill()


@pytest.mark.asyncio
async def test_async_pause_resume(server: Server) -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    try:
        await sbx.commands.run("echo 41 > /tmp/v")
        assert await sbx.pause() is True
        info = await sbx.get_info()
        assert info.state == "paused"
        same = await AsyncSandbox.connect(sbx.sandbox_id)
        assert (await same.commands.run("cat /tmp/v")).stdout.strip() == "41"
    finally:
        await sbx.kill()


LOOPBACK_PAIR = r"""
import os, socket, threading, time
server = socket.create_server(("127.0.0.1", 7000))
def echo():
    conn, _ = server.accept()
    while data := conn.recv(64):
        conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
client = socket.create_connection(("127.0.0.1", 7000))
count = 0
while True:
    try:
        client.sendall(b"x")
        assert client.recv(1) == b"x"
        count += 1
        status = f"ok {count}"
    except Exception as exc:
        status = f"broken after {count}: {exc!r}"
    with open("/tmp/tcp.tmp", "w") as f:
        f.write(status)
    os.replace("/tmp/tcp.tmp", "/tmp/tcp")
    if status.startswith("broken"):
        break
    time.sleep(0.05)
"""


def test_tcp_connections_survive_pause_and_resume(server: Server) -> None:
    """A connection between two of the sandbox's processes (a client and its local database,
    say) carries on after a resume, as in a VM: CRIU restores established connections."""
    sbx = Sandbox.create(timeout=120)
    try:
        sbx.files.write("/tmp/pair.py", LOOPBACK_PAIR)
        sbx.commands.run("python3 /tmp/pair.py", background=True)
        time.sleep(0.5)
        before = sbx.commands.run("cat /tmp/tcp").stdout
        assert before.startswith("ok "), before
        assert sbx.pause() is True
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
        time.sleep(0.5)
        after = resumed.commands.run("cat /tmp/tcp").stdout
        assert after.startswith("ok ") and int(after.split()[1]) > int(before.split()[1]), (before, after)
    finally:
        sbx.kill()
