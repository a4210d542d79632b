"""filesystem.Filesystem RPCs and /files through the real e2b SDK."""

from __future__ import annotations

import io
import os
import pwd
import uuid

import httpx
import pytest
from e2b.exceptions import FileNotFoundException, InvalidArgumentException
from e2b.sandbox.filesystem.filesystem import FileType, WriteEntry


def test_write_read_list_exists(sbx, workdir):
    info = sbx.files.write(f"{workdir}/sub/a.txt", "hello")
    assert info.path == f"{workdir}/sub/a.txt"
    assert sbx.files.read(f"{workdir}/sub/a.txt") == "hello"
    assert sbx.files.read(f"{workdir}/sub/a.txt", format="bytes") == bytearray(b"hello")
    user = pwd.getpwnam("user")
    for p in (f"{workdir}/sub/a.txt", f"{workdir}/sub", workdir):
        assert os.stat(p).st_uid == user.pw_uid
    assert sbx.files.exists(f"{workdir}/sub/a.txt")
    assert not sbx.files.exists(f"{workdir}/nope")
    entries = sbx.files.list(workdir)
    assert [(e.name, e.type) for e in entries] == [("sub", FileType.DIR)]
    deep = sbx.files.list(workdir, depth=2)
    assert sorted(e.path for e in deep) == [f"{workdir}/sub", f"{workdir}/sub/a.txt"]
    st = sbx.files.get_info(f"{workdir}/sub/a.txt")
    assert (st.size, st.owner, st.permissions) == (5, "user", "-rw-r--r--")


def test_relative_paths_resolve_to_home(sbx):
    name = f"rel-{uuid.uuid4().hex[:6]}.txt"
    sbx.files.write(name, "x")
    try:
        assert os.path.exists(f"/home/user/{name}")
        assert sbx.files.read(f"~/{name}") == "x"
    finally:
        sbx.files.remove(name)


def test_make_dir_remove_rename(sbx, workdir):
    assert sbx.files.make_dir(f"{workdir}/x/y") is True
    assert sbx.files.make_dir(f"{workdir}/x/y") is False
    sbx.files.write(f"{workdir}/f", "1")
    with pytest.raises(InvalidArgumentException):
        sbx.files.make_dir(f"{workdir}/f")
    moved = sbx.files.rename(f"{workdir}/f", f"{workdir}/x/g")
    assert moved.path == f"{workdir}/x/g"
    with pytest.raises(FileNotFoundException):
        sbx.files.rename(f"{workdir}/f", f"{workdir}/h")
    sbx.files.remove(f"{workdir}/x")
    assert not sbx.files.exists(f"{workdir}/x")
    sbx.files.remove(f"{workdir}/never-existed")  # missing is fine


def test_symlinks_not_followed(sbx, workdir):
    sbx.files.make_dir(f"{workdir}/real")
    sbx.files.write(f"{workdir}/real/inner", "1")
    os.symlink(f"{workdir}/real", f"{workdir}/link")
    entries = {e.name: e for e in sbx.files.list(workdir, depth=3)}
    assert "inner" in entries and entries["link"].symlink_target == f"{workdir}/real"
    assert sum(1 for e in sbx.files.list(workdir, depth=3) if e.name == "inner") == 1


def test_missing_and_directory_download(sbx, envd, workdir):
    with pytest.raises(FileNotFoundException):
        sbx.files.read(f"{workdir}/missing.txt")
    r = httpx.get(envd.url + "/files", params={"path": f"{workdir}/missing.txt"})
    assert r.status_code == 404
    assert r.json() == {"code": 404, "message": f"path '{workdir}/missing.txt' does not exist"}
    sbx.files.make_dir(workdir)
    assert httpx.get(envd.url + "/files", params={"path": workdir}).status_code == 400


def test_multi_upload_octet_and_gzip(sbx, envd, workdir):
    infos = sbx.files.write_files([WriteEntry(path=f"{workdir}/1", data="one"), WriteEntry(path=f"{workdir}/2", data=b"two")])
    assert sorted(i.path for i in infos) == [f"{workdir}/1", f"{workdir}/2"]
    big = os.urandom(3 * 1024 * 1024)
    sbx.files.write(f"{workdir}/big", io.BytesIO(big))  # octet-stream path
    sbx.files.write(f"{workdir}/gz", big, gzip=True)
    assert bytes(sbx.files.read(f"{workdir}/big", format="bytes")) == big
    assert bytes(sbx.files.read(f"{workdir}/gz", format="bytes", gzip=True)) == big
    r = httpx.get(envd.url + "/files", params={"path": f"{workdir}/1"}, headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.text == "one"


def test_envs_endpoint(envd):
    assert httpx.get(envd.url + "/envs").json() == {"SBX_VAR": "from-init"}
