"""A paused sandbox moves between two hosts' runtimes through the blob store (issue 17).

Two runc runtimes with their own data dirs, runc roots, subnets and nft tables stand for two
``sandlot node`` hosts; the pause image travels as one tree through a ``file://`` blob store.
With memory the same process carries on at its new address (CRIU restores into the new
host's netns, its connections closed); a filesystem-only pause boots from the moved disk."""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandlot import blobstore, blobtree
from sandlot.runtime.base import BindMount
from sandlot.runtime.runc import RuncRuntime

from .conftest import TEST_DATA
from .test_runtime import spec, wait_file

COUNTER = (
    "import os, socket, threading, time\n"
    "n = 0\n"
    "def serve():\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind(('0.0.0.0', 8000)); s.listen(8)\n"
    "    while True:\n"
    "        c, _ = s.accept(); c.sendall(str(n).encode()); c.close()\n"
    "threading.Thread(target=serve, daemon=True).start()\n"
    "open('/tmp/keep', 'w').write('from host a')\n"
    "while True:\n"
    "    n += 1\n"
    "    open('/tmp/n.tmp', 'w').write(str(n)); os.replace('/tmp/n.tmp', '/tmp/n')\n"
    "    open('/tmp/p.tmp', 'w').write(open('/.probe/host').read()); os.replace('/tmp/p.tmp', '/tmp/probe')\n"
    "    time.sleep(0.05)\n")


@pytest.fixture
async def host_b() -> AsyncIterator[RuncRuntime]:
    rt = RuncRuntime(TEST_DATA / "rt-b", "/run/sandlot-test-b", pool_size=2, subnet="10.215.0.0/16",
                     net_prefix="slb", nft_table="sandlot_test_b")
    await rt.start()
    yield rt
    await rt.kill_all()
    for sid in rt.paused_ids():
        await rt.kill(sid)
    await rt.close()


async def _ask(ip: str) -> int:
    def get() -> int:
        with socket.create_connection((ip, 8000), timeout=5) as c:
            return int(c.recv(64).decode())
    return await asyncio.to_thread(get)


def _probe(tmp_path: Path, host: str) -> BindMount:
    """A read-only bind like the envd runtime's or the CA bundle's: each host has its own source
    (under the test data dir: a user-namespaced restore must be able to reach it; tmp_path is 0700)."""
    source = TEST_DATA / "probes" / tmp_path.name / f"probe-{host}"
    source.mkdir(parents=True, exist_ok=True)
    (source / "host").write_text(host)
    return BindMount(source, "/.probe")


async def _move(a: RuncRuntime, b: RuncRuntime, sid: str, layers: list[Path], tmp_path: Path) -> None:
    store = blobstore.open_store(f"file://{tmp_path / 'blobs'}")
    digest = await asyncio.to_thread(blobtree.publish, store, a.export_paused(sid), tmp_path / "scratch")
    await a.kill(sid)   # host a is gone: only the blob store has the sandbox now
    staging = b.data_dir / "adopting" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    await asyncio.to_thread(blobtree.fetch, store, digest, staging / "bundle")
    shutil.rmtree(_probe(tmp_path, "a").source)   # host a's bind source does not exist on host b
    await b.adopt_paused(staging / "bundle", sid, layers, mounts=[_probe(tmp_path, "b")])
    assert sid in b.paused_ids()


@pytest.mark.parametrize("memory", [True, False], ids=["memory", "filesystem"])
async def test_paused_sandbox_resumes_on_another_host(runtime, host_b, base_rootfs, tmp_path, memory):
    s = spec([base_rootfs], ["/usr/bin/python3", "-c", COUNTER], mounts=[_probe(tmp_path, "a")])
    h = await runtime.create(s)
    counter = runtime.sandbox_dir(s.sandbox_id) / "disk" / "upper" / "tmp" / "n"
    await wait_file(counter)
    assert await _ask(h.ip) > 0
    await runtime.pause(s.sandbox_id, memory=memory)
    before = int(counter.read_text())
    await _move(runtime, host_b, s.sandbox_id, [base_rootfs], tmp_path)
    try:
        moved = await host_b.resume(s.sandbox_id, memory=True)
        host_b.finish_resume(s.sandbox_id)
        assert moved.ip != h.ip and moved.rebooted is not memory
        upper = host_b.sandbox_dir(s.sandbox_id) / "disk" / "upper"
        assert (upper / "tmp" / "keep").read_text() == "from host a"    # the disk moved
        hosts = (upper / "etc" / "hosts").read_text()
        assert moved.ip in hosts and h.ip not in hosts
        await asyncio.sleep(0.5)
        now = await _ask(moved.ip)   # reachable at its new address
        assert (upper / "tmp" / "probe").read_text() == "b"   # its bind mounts are this host's
        if memory:
            assert now > before   # the same process, counting on from its memory
        else:
            assert int((await wait_file(upper / "tmp" / "n"))) >= 1   # booted from the moved disk
    finally:
        await host_b.kill(s.sandbox_id)
        shutil.rmtree(TEST_DATA / "probes" / tmp_path.name, ignore_errors=True)
    assert not host_b.sandbox_dir(s.sandbox_id).exists()
