"""Volumes are tenant trees: a sandbox writes anything into one (symlinks to ``/etc/passwd``,
``..`` chains, absolute links to host paths, links to ``/``, loops), and the host's
volume-content API must never read, write, chown, list or remove anything outside the
volume through them (``orchestrator/volume_files.py`` goes through ``tenant_fs``'s
``openat2(RESOLVE_IN_ROOT)``). Each attack checks a host canary; next to it the legitimate
operation still works (a link inside the volume resolves as the sandbox sees it).

Also: the bind in the sandbox is ``nosuid,nodev``; ids and paths that are not a volume's
UUID or that climb with ``..`` are refused before any lookup."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server

CANARY = b"canary: the host's own file\n"


@pytest.fixture(scope="module")
def volume_api(server: Server) -> Iterator[Server]:
    saved = os.environ.get("E2B_VOLUME_API_URL")
    os.environ["E2B_VOLUME_API_URL"] = server.url
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop("E2B_VOLUME_API_URL", None)
        else:
            os.environ["E2B_VOLUME_API_URL"] = saved


@pytest.fixture
def canary_dir() -> Iterator[Path]:
    d = Path(f"/tmp/sandlot-canary-{uuid.uuid4().hex[:10]}")
    d.mkdir(mode=0o755)
    (d / "target").write_bytes(CANARY)
    os.chmod(d / "target", 0o644)
    yield d
    for path in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    d.rmdir()


def assert_untouched(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["target"], "nothing may appear in the host's directory"
    st = os.lstat(d / "target")
    assert stat.S_ISREG(st.st_mode) and (d / "target").read_bytes() == CANARY
    assert stat.S_IMODE(st.st_mode) == 0o644 and (st.st_uid, st.st_gid) == (0, 0)
    passwd = os.lstat("/etc/passwd")
    assert stat.S_IMODE(passwd.st_mode) == 0o644 and passwd.st_uid == 0
    assert b"pwned" not in Path("/etc/passwd").read_bytes()


def test_planted_symlinks_never_lead_the_content_api_out_of_the_volume(volume_api: Server, canary_dir: Path) -> None:
    from e2b import Sandbox, Volume, VolumeException, VolumePathNotFoundException

    vol = Volume.create(f"attack-{uuid.uuid4().hex[:8]}")
    sbx = Sandbox.create(timeout=120, volume_mounts={"/v": vol})
    try:
        host = str(canary_dir)
        plant = " && ".join([
            "cd /v", "ln -s /etc/passwd passwd", f"ln -s {host}/target canary", f"ln -s {host}/target canary2",
            f"ln -s ../../../../../../../..{host}/target up", f"ln -s {host} dirlink", f"ln -s {host} dirlink2",
            f"ln -s {host} dirlink3", "ln -s / rootlink", "ln -s loop loop", "mkdir -p real && echo inside > real/f",
            "ln -s /real/f good",   # absolute, inside the volume as the content API sees it
            "mkfifo fifo",          # a reader that opened it blocking would hang a host thread
        ])
        assert sbx.commands.run(plant, user="root").exit_code == 0
        mountinfo = sbx.commands.run("grep ' /v ' /proc/self/mountinfo").stdout
        assert "nosuid" in mountinfo and "nodev" in mountinfo

        for link in ("/canary", "/passwd", "/up", "/dirlink/target", "/rootlink/etc/passwd", f"/rootlink{host}/target"):
            with pytest.raises(VolumePathNotFoundException):   # resolved inside the volume: nothing there
                vol.read_file(link)
        with pytest.raises(VolumeException):
            vol.read_file("/loop")
        with pytest.raises(VolumeException, match="not a file"):
            vol.read_file("/fifo")
        assert vol.read_file("/good") == "inside\n"             # a link inside the volume still works
        assert vol.get_info("/canary").type.value == "symlink"  # stat never follows the final link
        assert vol.get_info("/canary").target == f"{host}/target"

        vol.write_file("/canary", "pwned", force=True)          # replaces the link, never writes through
        assert vol.get_info("/canary").type.value == "file"
        vol.write_file("/dirlink/target", "pwned", force=True)   # the link's target is made in the volume
        vol.make_dir("/dirlink2/sub", force=True)
        vol.update_metadata("/canary2", uid=0, gid=0, mode=0o777)   # lchown of the link, no chmod through it
        vol.update_metadata("/dirlink3", mode=0o700)
        assert sorted(e.name for e in vol.list("/rootlink")) == sorted(e.name for e in vol.list("/"))
        listed = [e.path for e in vol.list("/", depth=5)]
        assert all(not p.startswith("/dirlink3/") for p in listed)   # symlinks are listed, never descended
        vol.remove("/dirlink3")                                    # the link goes, not the host dir
        vol.remove("/rootlink")
        assert_untouched(canary_dir)

        in_sandbox = sbx.commands.run(f"cat /v{host}/target /v/canary", user="root").stdout   # what the writes made
        assert in_sandbox == "pwned" "pwned"
    finally:
        sbx.kill()
    assert_untouched(canary_dir)
    Volume.destroy(vol.volume_id)


def test_ids_and_paths_are_strict(volume_api: Server) -> None:
    from e2b import Volume

    vol = Volume.create(f"strict-{uuid.uuid4().hex[:8]}")
    auth = {"Authorization": f"Bearer {vol.token}"}
    with httpx.Client(base_url=volume_api.url, timeout=30) as http:
        for path in ("../../etc/passwd", "/a/../../etc/passwd", "..", "a/..", "x\0y"):
            answer = http.get(f"/volumecontent/{vol.volume_id}/file", params={"path": path}, headers=auth)
            assert answer.status_code == 400, (path, answer.text)
            assert b"root:" not in answer.content
        for bad_id in ("..%2F..%2Fetc", "%2e%2e", vol.volume_id.upper(), vol.volume_id + "x", "0" * 36):
            answer = http.get(f"/volumecontent/{bad_id}/file", params={"path": "/x"}, headers=auth)
            assert answer.status_code in (400, 404), (bad_id, answer.text)
            answer = http.get(f"/volumes/{bad_id}", headers={"X-API-Key": volume_api.api_key})
            assert answer.status_code in (400, 404), (bad_id, answer.text)
    Volume.destroy(vol.volume_id)
