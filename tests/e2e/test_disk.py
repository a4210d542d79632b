"""diskSizeMB has teeth: a sandbox's writes stop at its disk size (ENOSPC), not at the host's."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox

from sandlot import ids
from tests.e2e.server import data_dir, Server, unique_instance, unique_subnet

pytestmark = pytest.mark.slow

DISK_MB = 300


@pytest.fixture(scope="module")
def small_disks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-disk"), api_key=ids.new_api_key(),
                 instance=unique_instance("q"), subnet=unique_subnet(7),
                 extra_env={"SANDLOT_DEFAULT_DISK_MB": str(DISK_MB)})
    srv.start()
    yield srv
    srv.stop()


def _loop_images(server: Server) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"/{server.instance}/" in line]


def test_writes_stop_at_the_disk_size(small_disks: Server) -> None:
    opts = {"api_key": small_disks.api_key, "api_url": small_disks.url, "sandbox_url": small_disks.url}
    sbx = Sandbox.create(timeout=120, **opts)
    try:
        size_mb = int(sbx.commands.run("df -m --output=size / | tail -1").stdout)
        assert DISK_MB * 0.8 <= size_mb <= DISK_MB, size_mb
        with pytest.raises(CommandExitException) as full:
            sbx.commands.run("dd if=/dev/zero of=/home/user/big bs=1M count=400", timeout=60)
        assert "No space left on device" in full.value.stderr
        # still alive, still writable once space is freed, and the space really comes back
        sbx.commands.run("rm /home/user/big")
        sbx.files.write("/home/user/after.txt", "fits")
        assert sbx.files.read("/home/user/after.txt") == "fits"
        assert int(sbx.commands.run("df -m --output=used / | tail -1").stdout) < 50

        sbx.commands.run("dd if=/dev/urandom of=/home/user/keep bs=1M count=64", timeout=60)
        deadline = time.monotonic() + 15     # the metrics sampler reads the disk every 5 s
        while True:
            metrics = sbx.get_metrics()
            if metrics and metrics[-1].disk_used >= 64 * 1024 * 1024:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(1)
        assert metrics[-1].disk_total == DISK_MB * 1024 * 1024

        # the disk survives a pause (memory + disk) and a resume
        sbx.pause()
        resumed = Sandbox.connect(sbx.sandbox_id, **opts)
        assert resumed.files.read("/home/user/after.txt") == "fits"
        assert int(resumed.commands.run("stat -c %s /home/user/keep").stdout) == 64 * 1024 * 1024
        assert _loop_images(small_disks)
    finally:
        sbx.kill()
    deadline = time.monotonic() + 10
    while any(sbx.sandbox_id in line for line in _loop_images(small_disks)):
        assert time.monotonic() < deadline, "the loop device outlived its sandbox"
        time.sleep(0.2)


def test_snapshot_clones_get_a_disk_of_the_same_size(small_disks: Server) -> None:
    opts = {"api_key": small_disks.api_key, "api_url": small_disks.url, "sandbox_url": small_disks.url}
    src = Sandbox.create(timeout=120, **opts)
    try:
        src.files.write("/home/user/from-source.txt", "copied")
        (fork,) = src.fork(count=1, timeout=60)
        try:
            assert fork.files.read("/home/user/from-source.txt") == "copied"
            assert DISK_MB * 0.8 <= int(fork.commands.run("df -m --output=size / | tail -1").stdout) <= DISK_MB
            with pytest.raises(CommandExitException):
                fork.commands.run("dd if=/dev/zero of=/home/user/big bs=1M count=400", timeout=60)
            src.commands.run("dd if=/dev/zero of=/home/user/mine bs=1M count=100", timeout=60)  # its own disk
        finally:
            fork.kill()
    finally:
        src.kill()
    sandboxes = data_dir().joinpath("runtime", small_disks.instance, "sandboxes")
    deadline = time.monotonic() + 60   # a kill answers before its teardown finishes (in the background)
    while time.monotonic() < deadline and ((sandboxes / src.sandbox_id).exists() or (sandboxes / fork.sandbox_id).exists()):
        time.sleep(0.1)
    assert not (sandboxes / src.sandbox_id).exists() and not (sandboxes / fork.sandbox_id).exists()
