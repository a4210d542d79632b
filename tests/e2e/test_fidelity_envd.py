"""Issue 15, envd and sandbox behaviour an unmodified client can tell apart from E2B's:
recursive listing order, metadata on overwrite, reads of files ``stat`` misreports, a boot
id per boot, and what the SDKs report when a sandbox is killed under a streaming command.
Real SDKs (sync, async, JS, code interpreter) against a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import SandboxNotRunningException

from tests.e2e.server import Server, data_dir
from tests.e2e.test_code_interpreter import template_ready  # noqa: F401 — the fixture, for run_code
from tests.e2e.test_js_sdk import JS_DIR, _node_major

BOOT_ID = "/proc/sys/kernel/random/boot_id"
KILLED = "killed or reached its end of life"


def _host_boot_id() -> str:
    return Path(BOOT_ID).read_text().strip()


def _boot_id(sbx: Sandbox) -> str:
    value = sbx.commands.run(f"cat {BOOT_ID}").stdout.strip()
    assert len(value) == 36 and value.count("-") == 4, value
    return value


def _host_boot_file(server: Server, sandbox_id: str) -> Path:
    return data_dir() / "runtime" / server.instance / "sandboxes" / sandbox_id / "boot" / "boot_id"


# --- files ----------------------------------------------------------------------------------

def test_recursive_list_order_sync_and_async(sandbox: Sandbox) -> None:
    sandbox.commands.run("mkdir -p t/b/x/deep t/b/y t/a t/c && touch t/z t/b/2 t/b/1 t/b/x/f t/b/x/deep/g t/a/k t/B")
    want = ["B", "a", "a/k", "b", "b/1", "b/2", "b/x", "b/x/deep", "b/x/deep/g", "b/x/f", "b/y", "c", "z"]
    root = "/home/user/t"
    assert [e.path[len(root) + 1:] for e in sandbox.files.list(root, depth=5)] == want

    async def listed() -> list[str]:
        asbx = await AsyncSandbox.connect(sandbox.sandbox_id)
        return [e.path[len(root) + 1:] for e in await asbx.files.list(root, depth=5)]

    assert asyncio.run(listed()) == want


def test_overwrite_without_metadata_clears_it(sandbox: Sandbox) -> None:
    path = "/home/user/meta.txt"
    assert sandbox.files.write(path, "one", metadata={"owner": "alice"}).metadata == {"owner": "alice"}
    assert sandbox.files.write(path, "two").metadata is None
    assert sandbox.files.get_info(path).metadata is None
    assert sandbox.files.write(path, "three", metadata={"k": "v"}).metadata == {"k": "v"}

    async def overwrite() -> object:
        asbx = await AsyncSandbox.connect(sandbox.sandbox_id)
        await asbx.files.write(path, "four")
        return (await asbx.files.get_info(path)).metadata

    assert asyncio.run(overwrite()) is None
    assert sandbox.files.read(path) == "four"


def test_zero_size_and_pipe_files_are_read_to_eof(sandbox: Sandbox) -> None:
    meminfo = sandbox.files.read("/proc/meminfo")
    assert meminfo.startswith("MemTotal:") and meminfo.endswith("\n")
    assert sandbox.files.read("/proc/self/status").startswith("Name:")
    assert sandbox.files.read(BOOT_ID).strip() == _boot_id(sandbox)
    sandbox.commands.run("mkfifo /tmp/pipe && (seq 1 200000 > /tmp/pipe &)")
    assert sandbox.files.read("/tmp/pipe") == "".join(f"{i}\n" for i in range(1, 200001))

    async def read_async() -> str:
        asbx = await AsyncSandbox.connect(sandbox.sandbox_id)
        return await asbx.files.read("/proc/uptime")

    assert float(asyncio.run(read_async()).split()[0]) >= 0


def test_file_changing_while_read_stays_well_formed(sandbox: Sandbox) -> None:
    """A loop in the sandbox rewrites the file (truncate, refill) all along the reads: each
    read completes with one of the file's states' bytes, never a torn HTTP body."""
    sandbox.commands.run(
        "head -c 3000000 /dev/zero | tr '\\0' a > /tmp/a; head -c 100 /dev/zero | tr '\\0' b > /tmp/b; "
        "cp /tmp/a /tmp/churn", user="root")
    churn = sandbox.commands.run("while :; do cp /tmp/b /tmp/churn; cp /tmp/a /tmp/churn; done",
                                 background=True, user="root")
    try:
        for _ in range(10):
            body = bytes(sandbox.files.read("/tmp/churn", format="bytes"))
            assert set(body) <= {ord("a"), ord("b")} and len(body) <= 3_000_000
    finally:
        churn.kill()


# --- boot id --------------------------------------------------------------------------------

def test_each_sandbox_boot_has_its_own_boot_id(server: Server) -> None:
    one, two = Sandbox.create(timeout=300), Sandbox.create(timeout=120)
    try:
        first = _boot_id(one)
        assert first != _host_boot_id() and first != _boot_id(two)
        host_file = _host_boot_file(server, one.sandbox_id)
        assert host_file.read_text().strip() == first
        # lxcfs already gives each sandbox its own uptime: a fresh one is young
        assert float(one.commands.run("cut -d' ' -f1 /proc/uptime").stdout) < \
            float(Path("/proc/uptime").read_text().split()[0])
    finally:
        two.kill()
    try:
        # (a tenant cannot change or uncover it: tests/security/test_boot_id.py)
        assert _boot_id(one) == first and host_file.read_text().strip() == first

        # a memory pause/resume is the same boot carried on
        assert one.pause() is True
        same = Sandbox.connect(one.sandbox_id, timeout=300)
        assert _boot_id(same) == first

        # a fork is the source's memory carried on; a filesystem-only resume is a reboot
        (fork,) = same.fork(count=1, timeout=120)
        try:
            assert _boot_id(fork) == first
            assert _host_boot_file(server, fork.sandbox_id).read_text().strip() == first
            fork.commands.run(f"cat {BOOT_ID}")
        finally:
            fork.kill()
        assert same.pause(mode="filesystem") is True
        rebooted = Sandbox.connect(one.sandbox_id, timeout=300)
        second = _boot_id(rebooted)
        assert second != first and second != _host_boot_id()
        assert host_file.read_text().strip() == second
        # and a memory pause/resume of the rebooted sandbox keeps the new one
        assert rebooted.pause() is True
        assert _boot_id(Sandbox.connect(one.sandbox_id, timeout=300)) == second
    finally:
        one.kill()


def test_snapshot_clone_carries_the_boot_on(server: Server) -> None:
    src = Sandbox.create(timeout=300)
    clone = None
    try:
        first = _boot_id(src)
        snap = src.create_snapshot()
        clone = Sandbox.create(snap.snapshot_id, timeout=120)
        assert _boot_id(clone) == first
        # each keeps its own file: rebooting the clone does not touch the source's
        assert clone.pause(mode="filesystem") is True
        clone = Sandbox.connect(clone.sandbox_id, timeout=300)
        assert _boot_id(clone) != first and _boot_id(src) == first
        Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        src.kill()
        if clone is not None:
            clone.kill()


# --- a sandbox killed under a streaming command -----------------------------------------------

def _started(handle: object) -> None:
    """Iterate the background command until its first stdout line."""
    for stdout, _, _ in handle:   # type: ignore[attr-defined]
        if stdout and "started" in stdout:
            return
    pytest.fail("command ended before it printed")


def test_kill_under_streaming_command_sync(server: Server) -> None:
    sbx = Sandbox.create(timeout=120)
    handle = sbx.commands.run("echo started; sleep 600", background=True)
    _started(handle)
    Sandbox.kill(sbx.sandbox_id)
    with pytest.raises(SandboxNotRunningException, match=KILLED):
        handle.wait()


def test_kill_under_foreground_command_sync(server: Server) -> None:
    sbx = Sandbox.create(timeout=120)
    seen = threading.Event()
    killer = threading.Thread(target=lambda: (seen.wait(60), Sandbox.kill(sbx.sandbox_id)))
    killer.start()
    try:
        with pytest.raises(SandboxNotRunningException, match=KILLED):
            sbx.commands.run("echo started; sleep 600", on_stdout=lambda _: seen.set(), timeout=0)
    finally:
        seen.set()
        killer.join()


async def test_kill_under_streaming_command_async(server: Server) -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    started = asyncio.Event()
    handle = await sbx.commands.run("echo started; sleep 600", background=True,
                                    on_stdout=lambda line: started.set())
    await asyncio.wait_for(started.wait(), 60)
    await AsyncSandbox.kill(sbx.sandbox_id)
    with pytest.raises(SandboxNotRunningException, match=KILLED):
        await handle.wait()


async def test_kill_under_foreground_command_async(server: Server) -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    started = asyncio.Event()

    async def kill_when_started() -> None:
        await started.wait()
        await sbx.kill()

    killer = asyncio.ensure_future(kill_when_started())
    with pytest.raises(SandboxNotRunningException, match=KILLED):
        await sbx.commands.run("echo started; sleep 600", on_stdout=lambda _: started.set(), timeout=0)
    await killer


def test_timeout_under_streaming_command_is_reported_as_end_of_life(server: Server) -> None:
    """The sandbox reaching its end of life (its timeout) is told apart the same way."""
    sbx = Sandbox.create(timeout=120)
    handle = sbx.commands.run("echo started; sleep 600", background=True)
    _started(handle)
    sbx.set_timeout(1)
    with pytest.raises(SandboxNotRunningException, match=KILLED):
        handle.wait()


@pytest.mark.skipif(_node_major() < 20, reason="the e2b npm package needs Node >= 20")
def test_js_sdk_files_and_kill_under_streaming_command(server: Server) -> None:
    assert (JS_DIR / "node_modules" / "e2b").is_dir(), "run `make test` (it installs tests/js/node_modules)"
    env = dict(os.environ, E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.api_key)
    result = subprocess.run(["node", "--test", "--test-reporter=spec", "fidelity.test.mjs"], cwd=JS_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


# --- run_code in the code interpreter (its own probe: is_running → "was killed") -------------

CI_KILLED = "sandbox was killed while the request was in progress"
SLOW_CODE = "print('started', flush=True)\nimport time\ntime.sleep(600)"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("template_ready")
def test_code_interpreter_run_code_killed_sync() -> None:
    from e2b import TimeoutException
    from e2b_code_interpreter import Sandbox as CodeSandbox

    sbx = CodeSandbox.create(timeout=300)
    seen = threading.Event()
    killer = threading.Thread(target=lambda: (seen.wait(120), CodeSandbox.kill(sbx.sandbox_id)))
    killer.start()
    try:
        with pytest.raises(TimeoutException, match=CI_KILLED):
            sbx.run_code(SLOW_CODE, on_stdout=lambda _: seen.set(), timeout=300)
    finally:
        seen.set()
        killer.join()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("template_ready")
async def test_code_interpreter_run_code_killed_async() -> None:
    from e2b import TimeoutException
    from e2b_code_interpreter import AsyncSandbox as AsyncCodeSandbox

    sbx = await AsyncCodeSandbox.create(timeout=300)
    started = asyncio.Event()

    async def kill_when_started() -> None:
        await started.wait()
        await sbx.kill()

    killer = asyncio.ensure_future(kill_when_started())
    with pytest.raises(TimeoutException, match=CI_KILLED):
        await sbx.run_code(SLOW_CODE, on_stdout=lambda _: started.set(), timeout=300)
    await killer


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("template_ready")
@pytest.mark.skipif(_node_major() < 20, reason="the e2b npm packages need Node >= 20")
def test_code_interpreter_run_code_killed_js(server: Server) -> None:
    env = dict(os.environ, E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.api_key)
    result = subprocess.run(["node", "--test", "--test-reporter=spec", "fidelity_code_interpreter.test.mjs"],
                            cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
