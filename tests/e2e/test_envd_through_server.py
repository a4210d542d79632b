"""envd features end to end through the front door (streams, PTY, signed URLs, volume)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time

import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType
from e2b.sandbox.commands.command_handle import PtySize

from tests.e2e.server import Server


def test_signed_urls_with_curl(sandbox: Sandbox, server: Server) -> None:
    upload = sandbox.upload_url("/home/user/curl.txt", use_signature_expiration=60)
    subprocess.run(["curl", "-sf", "-F", "file=@-;filename=curl.txt", upload], input=b"via curl", check=True)
    download = sandbox.download_url("/home/user/curl.txt", use_signature_expiration=60)
    got = subprocess.run(["curl", "-sf", download], capture_output=True, check=True).stdout
    assert got == b"via curl"
    assert sandbox.files.read("curl.txt") == "via curl"
    expired = sandbox.download_url("/home/user/curl.txt", use_signature_expiration=-10)
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", expired], capture_output=True, text=True).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "401"
    assert body.strip() == '{"code":401,"message":"signature is already expired"}'


def test_commands_connect_from_another_client(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("for i in 1 2 3; do echo tick $i; sleep 0.3; done", background=True)
    other = Sandbox.connect(sandbox.sandbox_id)
    attached = other.commands.connect(handle.pid)
    result = attached.wait()
    assert "tick 3" in result.stdout
    assert result.exit_code == 0


def test_fifty_concurrent_commands(sandbox: Sandbox) -> None:
    handles = [sandbox.commands.run(f"sleep 0.5; echo n{i}", background=True) for i in range(50)]
    outputs = [h.wait().stdout for h in handles]
    assert outputs == [f"n{i}\n" for i in range(50)]


def test_pty_through_front_door(sandbox: Sandbox) -> None:
    chunks: list[bytes] = []
    terminal = sandbox.pty.create(PtySize(rows=24, cols=90), timeout=30)
    sandbox.pty.send_stdin(terminal.pid, b"stty size; tty; exit 0\n")
    terminal.wait(on_pty=chunks.append)
    text = b"".join(chunks).decode(errors="replace")
    assert "24 90" in text
    assert "/dev/pts/" in text


async def test_async_watch_dir_streams_through_front_door(server: Server) -> None:
    sbx = await AsyncSandbox.create()
    try:
        await sbx.files.make_dir("w")
        events = []
        watcher = await sbx.files.watch_dir("w", on_event=events.append, recursive=True)
        await sbx.files.write("w/new.txt", "x")
        for _ in range(50):
            if any(e.name == "new.txt" for e in events):
                break
            await asyncio.sleep(0.1)
        await watcher.stop()
        assert any(e.name == "new.txt" and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE) for e in events)
    finally:
        await sbx.kill()


def test_sync_watch_dir_polling(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("polled")
    watcher = sandbox.files.watch_dir("polled")
    sandbox.files.write("polled/p.txt", "1")
    sandbox.files.remove("polled/p.txt")
    deadline = time.monotonic() + 5
    seen: set[FilesystemEventType] = set()
    while time.monotonic() < deadline and FilesystemEventType.REMOVE not in seen:
        seen |= {e.type for e in watcher.get_new_events() if e.name == "p.txt"}
        time.sleep(0.1)
    watcher.stop()
    assert FilesystemEventType.CREATE in seen and FilesystemEventType.REMOVE in seen


@pytest.mark.slow
def test_hundred_megabytes_each_way(sandbox: Sandbox) -> None:
    payload = hashlib.sha256(b"seed").digest() * (100 * 1024 * 1024 // 32)
    sandbox.files.write("big.bin", payload)
    assert sandbox.commands.run("stat -c %s big.bin").stdout.strip() == str(len(payload))
    assert sandbox.files.read("big.bin", format="bytes") == payload
    streamed = sandbox.commands.run("head -c 50000000 /dev/zero | base64 -w 0 | wc -c", timeout=120)
    assert int(streamed.stdout) > 60_000_000
