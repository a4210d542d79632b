"""Directory watchers (polling CreateWatcher/GetWatcherEvents and streaming WatchDir) via the SDK."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from e2b import SandboxException
from e2b.exceptions import FileNotFoundException, InvalidArgumentException
from e2b.sandbox.filesystem.watch_handle import FilesystemEventType as T


def _poll(handle, want: set[tuple[str, T]], timeout: float = 5.0) -> list:
    """Collect events until every wanted (name, type) pair has been seen."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += handle.get_new_events()
        if want <= {(e.name, e.type) for e in seen}:
            return seen
        time.sleep(0.05)
    pytest.fail(f"missing events {want - {(e.name, e.type) for e in seen}}; got {seen}")


def test_polling_watch_event_types(sbx, workdir):
    os.makedirs(workdir)
    h = sbx.files.watch_dir(workdir)
    with open(f"{workdir}/a.txt", "w") as f:
        f.write("x")
    os.chmod(f"{workdir}/a.txt", 0o600)
    os.rename(f"{workdir}/a.txt", f"{workdir}/b.txt")
    os.unlink(f"{workdir}/b.txt")
    events = _poll(h, {("a.txt", T.CREATE), ("a.txt", T.WRITE), ("a.txt", T.CHMOD), ("a.txt", T.RENAME),
                       ("b.txt", T.CREATE), ("b.txt", T.REMOVE)})
    assert all(e.entry is None for e in events)
    assert h.get_new_events() == []  # drained
    h.stop()
    with pytest.raises(SandboxException, match="already stopped"):
        h.get_new_events()


def test_polling_watch_not_recursive_by_default(sbx, workdir):
    os.makedirs(f"{workdir}/sub")
    h = sbx.files.watch_dir(workdir)
    open(f"{workdir}/sub/deep", "w").close()
    open(f"{workdir}/top", "w").close()
    events = _poll(h, {("top", T.CREATE)})
    assert not [e for e in events if e.name.startswith("sub/")]
    h.stop()


def test_recursive_watch_follows_new_subdirs_with_entries(sbx, workdir):
    os.makedirs(f"{workdir}/old")
    h = sbx.files.watch_dir(workdir, recursive=True, include_entry=True)
    open(f"{workdir}/old/x", "w").close()
    os.makedirs(f"{workdir}/new/inner")
    time.sleep(0.2)  # let envd add the watch on the new directories first
    with open(f"{workdir}/new/inner/f", "w") as f:
        f.write("hi")
    events = _poll(h, {("old/x", T.CREATE), ("new", T.CREATE), ("new/inner/f", T.CREATE), ("new/inner/f", T.WRITE)})
    by = {(e.name, e.type): e for e in events}
    entry = by[("new/inner/f", T.WRITE)].entry
    assert entry is not None and entry.path == f"{workdir}/new/inner/f" and entry.size == 2
    assert by[("new", T.CREATE)].entry.type.value == "dir"
    os.unlink(f"{workdir}/old/x")
    removed = _poll(h, {("old/x", T.REMOVE)})
    assert [e.entry for e in removed if e.type == T.REMOVE] == [None]  # gone: no entry
    h.stop()


def test_polling_watch_errors(sbx, envd, workdir):
    os.makedirs(workdir)
    open(f"{workdir}/file", "w").close()
    with pytest.raises(FileNotFoundException):
        sbx.files.watch_dir(f"{workdir}/missing")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sbx.files.watch_dir(f"{workdir}/file")
    h = sbx.files.watch_dir(workdir, allow_network_mounts=True)
    h.stop()
    with pytest.raises(Exception, match="not found"):  # unknown watcher id → not_found
        h.stop()


async def test_async_watch_stream(asbx, workdir):
    os.makedirs(workdir)
    got: list = []
    exits: list = []
    h = await asbx.files.watch_dir(workdir, on_event=got.append, on_exit=exits.append, recursive=True)
    with open(f"{workdir}/n.txt", "w") as f:
        f.write("1")
    for _ in range(100):
        if {("n.txt", T.CREATE), ("n.txt", T.WRITE)} <= {(e.name, e.type) for e in got}:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"stream events missing: {got}")
    await h.stop()
    assert exits == [None]


async def test_async_watch_errors(asbx, workdir):
    os.makedirs(workdir)
    open(f"{workdir}/file", "w").close()
    with pytest.raises(FileNotFoundException):
        await asbx.files.watch_dir(f"{workdir}/missing", on_event=print)
    with pytest.raises(InvalidArgumentException):
        await asbx.files.watch_dir(f"{workdir}/file", on_event=print)


def test_watch_stream_keepalive_raw(envd, workdir):
    """WatchDir sends start first, then keepalives per Keepalive-Ping-Interval."""
    import json
    import struct

    import httpx

    os.makedirs(workdir)
    body = json.dumps({"path": workdir}).encode()
    headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
               "Keepalive-Ping-Interval": "1", "Connect-Timeout-Ms": "2500"}
    msgs = []
    with httpx.stream("POST", envd.url + "/filesystem.Filesystem/WatchDir", headers=headers, timeout=10,
                      content=b"\x00" + struct.pack(">I", len(body)) + body) as r:
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            while len(buf) >= 5 and len(buf) >= 5 + struct.unpack(">I", buf[1:5])[0]:
                n = struct.unpack(">I", buf[1:5])[0]
                msgs.append((buf[0], json.loads(buf[5:5 + n])))
                buf = buf[5 + n:]
    assert msgs[0] == (0, {"start": {}})
    assert (0, {"keepalive": {}}) in msgs
    assert msgs[-1][0] == 2 and msgs[-1][1]["error"]["code"] == "deadline_exceeded"
