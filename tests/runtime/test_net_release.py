"""A released network slot leaves no host link behind, at once.

Found by bench/soak.py: after ``sandlot reset`` a host veth of the instance was still there,
because releasing a slot only unmounted its netns and left the veth pair to the kernel's
asynchronous netns cleanup (or to whenever the last process in the netns exits)."""
from __future__ import annotations

import errno
import os
import subprocess
import types

import pytest

from sandlot.runtime.network import Network, release_netns
from sandlot.runtime.runc import RuncRuntime

from .conftest import TEST_DATA
from .test_runtime import SLEEP, spec


def links(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))


def netns(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))


async def test_release_deletes_the_veth_even_while_a_process_holds_the_netns():
    net = Network(subnet="10.216.0.0/24", prefix="slr", table="sandlot_test_rel")
    s = await net.make_slot()
    holder = subprocess.Popen(["ip", "netns", "exec", s.netns, "sleep", "1000"])
    try:
        assert s.veth in links("slrv")
        release_netns(s.netns)
        # the holder keeps the namespace alive: only an explicit delete removes the host end
        assert links("slrv") == [] and netns("slr-") == []
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
        release_netns(s.netns)
    release_netns(s.netns)   # again: nothing there, no error


@pytest.mark.parametrize("where", ["runtime.json", "disk"])
async def test_create_failing_on_a_full_disk_leaks_no_netns_or_veth(runtime, base_rootfs, monkeypatch, where):
    def enospc(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    async def aenospc(*a, **kw):
        enospc()

    if where == "runtime.json":
        monkeypatch.setattr(runtime, "_write_atomic", enospc)
    else:
        monkeypatch.setattr("sandlot.runtime.runc.disk.create", aenospc)
    acquired = []
    real_acquire = runtime.network.acquire

    async def acquire():
        acquired.append(await real_acquire())
        return acquired[-1]

    monkeypatch.setattr(runtime.network, "acquire", acquire)
    with pytest.raises(OSError):
        await runtime.create(spec([base_rootfs], SLEEP))
    (slot,) = acquired
    assert slot.veth not in links("sltv")
    assert slot.netns not in netns("slt-")
    monkeypatch.undo()
    s = spec([base_rootfs], SLEEP)   # the disk has room again: creates work
    await runtime.create(s)
    assert await runtime.is_alive(s.sandbox_id)


async def test_reset_removes_every_link_of_the_instance(base_rootfs, tmp_path):
    """What ``sandlot reset`` does to a stopped server's running sandboxes and its pool."""
    from sandlot.cli import _reset
    from sandlot.store.database import Database

    def runtime() -> RuncRuntime:
        return RuncRuntime(TEST_DATA / "rt-reset", "/run/sandlot-test-reset", pool_size=2,
                           subnet="10.216.1.0/24", net_prefix="slx", nft_table="sandlot_test_reset")

    server = runtime()
    await server.start()
    try:
        for _ in range(2):
            await server.create(spec([base_rootfs], SLEEP))
    finally:
        await server.close()   # the server stops; its sandboxes keep running
    assert len(links("slxv")) == 2
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        killed = await _reset(types.SimpleNamespace(runtime=runtime(), db=db,
                                                    settings=types.SimpleNamespace(runtime_dir=TEST_DATA / "rt-reset",
                                                                                   volumes_dir=tmp_path / "volumes",
                                                                                   role="serve", node_token=None)))
    finally:
        db.dispose()
    assert killed == 2
    assert links("slxv") == [] and netns("slx-") == []
