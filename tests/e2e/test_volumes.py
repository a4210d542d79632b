"""E2B volumes with the unmodified ``e2b`` SDK: ``Volume``/``AsyncVolume`` CRUD and content,
``volume_mounts`` shared by concurrent sandboxes, persistence across kill, pause/resume,
snapshots and a server restart, the size quota, team isolation, nothing left mounted.

One server of the module's own: a small volume size (the quota test fills it), a short
idle unmount (the leak checks), and a restart in the middle."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandlot import ids
from tests.e2e.server import SANDLOT, Server, data_dir, sdk_pointed_at

VOLUME_MB = 64
JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def vserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("volumes"), api_key=ids.new_api_key(),
                 extra_env={"SANDLOT_VOLUME_SIZE_MB": str(VOLUME_MB), "SANDLOT_VOLUME_IDLE_UNMOUNT_S": "1",
                            "SANDLOT_WARM_POOL_SIZE": "0",
                            # CRIU pauses: a hot pause's frozen container keeps holding its volumes' mounts
                            "SANDLOT_HOT_PAUSE_S": "0"})
    srv.start()
    saved = os.environ.get("E2B_VOLUME_API_URL")
    os.environ["E2B_VOLUME_API_URL"] = srv.url   # the SDK's content API base (else https://api.<domain>)
    try:
        with sdk_pointed_at(srv):
            yield srv
    finally:
        if saved is None:
            os.environ.pop("E2B_VOLUME_API_URL", None)
        else:
            os.environ["E2B_VOLUME_API_URL"] = saved
        srv.reset()   # kills what a failed test left, unmounts and removes the instance's volumes


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _volume_dir(srv: Server, volume_id: str) -> Path:
    return data_dir() / "volumes" / srv.instance / volume_id


def _mounted(srv: Server, volume_id: str) -> bool:
    return os.path.ismount(_volume_dir(srv, volume_id) / "mnt")


def _loop_devices(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout.strip()


def _unmounted_soon(srv: Server, volume_id: str, within_s: float = 60) -> bool:
    """Unmounted on the host and its loop device detached (the kernel's autoclear is asynchronous)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _mounted(srv, volume_id) and not _loop_devices(_volume_dir(srv, volume_id) / "volume.img"):
            return True
        time.sleep(0.2)
    return False


def test_volume_crud_and_content_api(vserver: Server) -> None:
    from e2b import Volume, VolumeException, VolumePathNotFoundException

    name = _name("crud")
    vol = Volume.create(name)
    assert vol.name == name and uuid.UUID(vol.volume_id) and vol.token
    assert name in [v.name for v in Volume.list()]
    info = Volume.get_info(vol.volume_id)
    assert (info.volume_id, info.name) == (vol.volume_id, name) and info.token
    with pytest.raises(VolumeException):   # names are unique per team
        Volume.create(name)

    stat = vol.write_file("/notes/a.txt", "hello volume", force=True)   # force: parents made
    assert (stat.name, stat.path, stat.type.value, stat.size) == ("a.txt", "/notes/a.txt", "file", 12)
    assert (stat.uid, stat.gid, stat.mode) == (9090, 9090, 0o666)       # E2B's defaults
    assert vol.read_file("/notes/a.txt") == "hello volume"
    assert vol.read_file("notes/a.txt", format="bytes") == b"hello volume"
    assert b"".join(vol.read_file("/notes/a.txt", format="stream")) == b"hello volume"
    with pytest.raises(VolumeException):   # without force a write is exclusive (E2B's server)
        vol.write_file("/notes/a.txt", "again")
    vol.write_file("/notes/a.txt", "replaced", force=True)
    assert vol.read_file("/notes/a.txt") == "replaced"
    with pytest.raises(VolumePathNotFoundException):   # no parent, no force
        vol.write_file("/missing/b.txt", "x")

    made = vol.make_dir("/deep/er/dir", force=True, mode=0o750, uid=1000, gid=1000)
    assert (made.type.value, made.mode, made.uid) == ("directory", 0o750, 1000)
    with pytest.raises(VolumeException):
        vol.make_dir("/deep/er/dir")
    vol.write_file("/deep/er/dir/f", b"\x00\x01", force=True)
    listed = [e.path for e in vol.list("/", depth=3)]
    assert listed == ["/deep", "/deep/er", "/deep/er/dir", "/notes", "/notes/a.txt"]   # depth-first, lexical
    assert [e.name for e in vol.list("/deep/er/dir")] == ["f"]
    updated = vol.update_metadata("/notes/a.txt", uid=1000, gid=1000, mode=0o600)
    assert (updated.uid, updated.gid, updated.mode) == (1000, 1000, 0o600)
    assert vol.exists("/notes/a.txt") and not vol.exists("/nope")
    vol.remove("/deep")
    assert not vol.exists("/deep/er/dir/f")
    with pytest.raises(VolumePathNotFoundException):
        vol.get_info("/deep")
    with pytest.raises(VolumeException):   # the root itself can't go
        vol.remove("/")

    connected = Volume.connect(vol.volume_id)   # a fresh token works the same
    assert connected.read_file("/notes/a.txt") == "replaced"
    assert Volume.destroy(vol.volume_id) is True
    assert Volume.destroy(vol.volume_id) is False
    assert not _volume_dir(vserver, vol.volume_id).exists()


def test_mounted_in_two_sandboxes_shared_and_kept_after_kill(vserver: Server) -> None:
    from e2b import Sandbox, Volume, VolumeException

    vol = Volume.create(_name("shared"))
    vol.write_file("/seed.txt", "from the api", force=True)
    first = Sandbox.create(timeout=120, volume_mounts={"/mnt/shared": vol})
    second = Sandbox.create(timeout=120, volume_mounts={"/data": vol.name})
    try:
        assert first.commands.run("cat /mnt/shared/seed.txt").stdout == "from the api"
        first.commands.run("echo written-by-first > /mnt/shared/one.txt")
        assert second.commands.run("cat /data/one.txt").stdout.strip() == "written-by-first"   # same tree, live
        second.files.write("/data/two.txt", "via envd in the second")
        assert first.files.read("/mnt/shared/two.txt") == "via envd in the second"
        stat = vol.get_info("/one.txt")   # the sandbox's user (uid 1000) as the API reports it
        assert (stat.uid, stat.gid) == (1000, 1000)
        assert first.get_info().volume_mounts == [{"name": vol.name, "path": "/mnt/shared"}]
        listed = [s for s in Sandbox.list(limit=100).next_items() if s.sandbox_id == second.sandbox_id]
        assert listed[0].volume_mounts == [{"name": vol.name, "path": "/data"}]
        assert _mounted(vserver, vol.volume_id)
        with pytest.raises(VolumeException, match="409"):   # in use: refused, clearly
            Volume.destroy(vol.volume_id)
    finally:
        first.kill()
        second.kill()
    assert _unmounted_soon(vserver, vol.volume_id), "the last sandbox went: the volume must be unmounted"
    assert vol.read_file("/two.txt") == "via envd in the second"   # persisted past the kills
    third = Sandbox.create(timeout=120, volume_mounts={"/again": vol})
    try:
        assert third.commands.run("cat /again/one.txt /again/two.txt").stdout == "written-by-first\nvia envd in the second"
    finally:
        third.kill()


def test_bad_mounts_answer_400(vserver: Server) -> None:
    from e2b import Sandbox, SandboxException

    for mounts in ({"/mnt/x": "no-such-volume"}, {"relative": "x"}, {"/proc/x": "x"}, {"/a/../b": "x"}):
        with pytest.raises(SandboxException, match="invalid mounts"):
            Sandbox.create(timeout=30, volume_mounts=mounts)


def test_quota_is_enospc_inside_and_507_through_the_api(vserver: Server) -> None:
    from e2b import Sandbox, Volume, VolumeException

    vol = Volume.create(_name("quota"))
    sbx = Sandbox.create(timeout=120, volume_mounts={"/q": vol})
    try:
        out = sbx.commands.run(f"dd if=/dev/zero of=/q/fill bs=1M count={VOLUME_MB * 2} 2>&1; df -m /q",
                               user="root", timeout=120)
        assert "No space left on device" in out.stdout
        assert int(out.stdout.split()[-5]) <= VOLUME_MB   # df's size column: the volume's, not the host's
        with pytest.raises(VolumeException, match="507"):
            vol.write_file("/more", b"x" * (4 << 20), force=True)
        sbx.commands.run("rm /q/fill", user="root")
        vol.write_file("/more", b"x" * (4 << 20), force=True)   # room again
    finally:
        sbx.kill()


def test_another_team_sees_nothing(vserver: Server) -> None:
    from e2b import Sandbox, SandboxException, Volume, VolumeNotFoundException

    vol = Volume.create(_name("mine"))
    other_key = subprocess.run([str(SANDLOT), "keys", "create", "--team", "volume-other", "--name", "t"],
                               env=vserver.env(), capture_output=True, text=True, check=True).stdout.split()[-1]
    with pytest.raises(VolumeNotFoundException):
        Volume.get_info(vol.volume_id, api_key=other_key)
    assert Volume.destroy(vol.volume_id, api_key=other_key) is False
    assert vol.name not in [v.name for v in Volume.list(api_key=other_key)]
    with pytest.raises(SandboxException, match="invalid mounts"):   # names are per team
        Sandbox.create(timeout=30, volume_mounts={"/x": vol.name}, api_key=other_key)
    theirs = Volume.create(vol.name, api_key=other_key)   # the same name is free in another team
    assert theirs.volume_id != vol.volume_id
    with httpx.Client(base_url=vserver.url, timeout=30) as http:
        # a token opens its own volume only; none, or a forged one, opens nothing
        foreign = http.get(f"/volumecontent/{vol.volume_id}/dir", params={"path": "/"},
                           headers={"Authorization": f"Bearer {theirs.token}"})
        assert foreign.status_code == 404
        assert http.get(f"/volumecontent/{vol.volume_id}/dir", params={"path": "/"}).status_code == 401
        forged = vol.token[:-4] + ("AAAA" if not vol.token.endswith("AAAA") else "BBBB")
        assert http.get(f"/volumecontent/{vol.volume_id}/dir", params={"path": "/"},
                        headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        api_key = http.get(f"/volumecontent/{vol.volume_id}/dir", params={"path": "/"},
                           headers={"X-API-Key": vserver.api_key})
        assert api_key.status_code == 401
        for bad in ("..", "../etc", "a%2Fb", "not-a-uuid"):
            assert http.get(f"/volumes/{bad}", headers={"X-API-Key": vserver.api_key}).status_code in (400, 404)


def test_async_sdk(vserver: Server) -> None:
    from e2b import AsyncSandbox, AsyncVolume

    async def main() -> None:
        vol = await AsyncVolume.create(_name("async"))
        await vol.write_file("/hello.txt", "async hello", force=True)
        assert await vol.read_file("/hello.txt") == "async hello"
        sbx = await AsyncSandbox.create(timeout=120, volume_mounts={"/v": vol})
        try:
            assert (await sbx.commands.run("cat /v/hello.txt")).stdout == "async hello"
            await sbx.commands.run("echo back > /v/back.txt")
        finally:
            await sbx.kill()
        assert (await vol.read_file("/back.txt")).strip() == "back"
        assert [e.name for e in await vol.list("/")] == ["back.txt", "hello.txt"]
        assert await AsyncVolume.destroy(vol.volume_id)

    asyncio.run(main())


@pytest.mark.slow
def test_pause_resume_snapshot_and_fork_keep_the_volume(vserver: Server) -> None:
    from e2b import Sandbox, Volume

    vol = Volume.create(_name("pause"))
    sbx = Sandbox.create(timeout=300, volume_mounts={"/w": vol})
    clone = None
    forks: list[Sandbox] = []
    try:
        # an open file on the volume across the dump: CRIU restores it through the external mount
        sbx.commands.run("sleep 600 > /w/held.txt", background=True)
        sbx.commands.run("echo before > /w/p.txt")
        sbx.pause()
        assert _unmounted_soon(vserver, vol.volume_id), "a paused sandbox holds no mount"
        vol.write_file("/while-paused.txt", "api", force=True)
        sbx.connect()
        assert sbx.commands.run("cat /w/p.txt /w/while-paused.txt").stdout == "before\napi"
        sbx.commands.run("echo after > /w/p.txt")
        snap = sbx.create_snapshot()
        clone = Sandbox.create(snap.snapshot_id, timeout=120)
        assert clone.get_info().volume_mounts == [{"name": vol.name, "path": "/w"}]
        clone.commands.run("echo from-clone > /w/c.txt")
        assert sbx.commands.run("cat /w/c.txt").stdout.strip() == "from-clone"   # shared, not copied
        forked = sbx.fork(timeout=120, count=1)[0]
        assert not isinstance(forked, Exception), forked
        forks.append(forked)
        assert forked.commands.run("cat /w/c.txt").stdout.strip() == "from-clone"
        forked.commands.run("echo from-fork > /w/f.txt")
        assert vol.read_file("/f.txt").strip() == "from-fork"
        sbx.pause()   # a reboot (filesystem-only resume) binds the volume again too
        rebooted = Sandbox.connect(sbx.sandbox_id, on_resume="reboot")
        assert rebooted.commands.run("cat /w/f.txt").stdout.strip() == "from-fork"
    finally:
        sbx.kill()
        for other in [clone, *forks]:
            if other is not None:
                other.kill()
    assert _unmounted_soon(vserver, vol.volume_id)


@pytest.mark.slow
def test_volume_survives_a_server_restart(vserver: Server) -> None:
    from e2b import Sandbox, Volume

    vol = Volume.create(_name("restart"))
    running = Sandbox.create(timeout=300, volume_mounts={"/r": vol})
    running.commands.run("echo kept > /r/k.txt")
    vserver.stop()
    vserver.start()
    try:
        assert running.commands.run("cat /r/k.txt").stdout.strip() == "kept"   # re-adopted, still bound
        assert Volume.connect(vol.volume_id).read_file("/k.txt").strip() == "kept"
        fresh = Sandbox.create(timeout=120, volume_mounts={"/n": vol})
        try:
            assert fresh.commands.run("cat /n/k.txt").stdout.strip() == "kept"
        finally:
            fresh.kill()
    finally:
        running.kill()
    assert _unmounted_soon(vserver, vol.volume_id)
    vserver.stop()
    vserver.start()   # nothing uses it: it stays unmounted, and its data is kept
    assert not _mounted(vserver, vol.volume_id)
    assert Volume.connect(vol.volume_id).read_file("/k.txt").strip() == "kept"
    assert _unmounted_soon(vserver, vol.volume_id)


def _node_major() -> int:
    if shutil.which("node") is None:
        return 0
    out = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return int(out.lstrip("v").split(".")[0] or 0)


@pytest.mark.skipif(_node_major() < 20, reason="the e2b npm package needs Node >= 20")
def test_js_sdk(vserver: Server) -> None:
    assert (JS_DIR / "node_modules" / "e2b").is_dir(), "run `make test` (it installs tests/js/node_modules)"
    env = dict(os.environ, E2B_API_URL=vserver.url, E2B_SANDBOX_URL=vserver.url, E2B_API_KEY=vserver.api_key,
               E2B_VOLUME_API_URL=vserver.url)
    result = subprocess.run(["node", "--test", "--test-reporter=spec", "volumes.test.mjs"], cwd=JS_DIR, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
