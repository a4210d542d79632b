"""/files extras: xattr metadata, Range, Accept-Encoding negotiation, big streams, many parts."""

from __future__ import annotations

import gzip
import os
import pwd
import subprocess
import threading
import time

import httpx
import pytest
from e2b.exceptions import InvalidArgumentException
from e2b.sandbox.filesystem.filesystem import WriteEntry


def test_write_metadata_roundtrip(sbx, workdir):
    info = sbx.files.write(f"{workdir}/m.txt", "data", metadata={"Owner": "alice", "tag": "v1"})
    assert info.metadata == {"owner": "alice", "tag": "v1"}
    assert os.getxattr(f"{workdir}/m.txt", "user.e2b.owner") == b"alice"
    assert sbx.files.get_info(f"{workdir}/m.txt").metadata == {"owner": "alice", "tag": "v1"}
    listed = {e.name: e for e in sbx.files.list(workdir)}
    assert listed["m.txt"].metadata == {"owner": "alice", "tag": "v1"}
    # new metadata replaces the whole user.e2b.* set; foreign xattrs are untouched
    os.setxattr(f"{workdir}/m.txt", "user.other", b"keep")
    sbx.files.write(f"{workdir}/m.txt", "data2", metadata={"tag": "v2"})
    assert sbx.files.get_info(f"{workdir}/m.txt").metadata == {"tag": "v2"}
    assert os.getxattr(f"{workdir}/m.txt", "user.other") == b"keep"
    # a rename carries it along; a plain overwrite clears it (tests/envd/test_fidelity.py)
    moved = sbx.files.rename(f"{workdir}/m.txt", f"{workdir}/n.txt")
    assert moved.metadata == {"tag": "v2"}
    assert sbx.files.get_info(workdir).metadata is None


def test_metadata_octet_stream_and_multi(sbx, workdir):
    import io

    info = sbx.files.write(f"{workdir}/o.bin", io.BytesIO(b"abc"), metadata={"k": "v"})
    assert info.metadata == {"k": "v"}
    infos = sbx.files.write_files([WriteEntry(path=f"{workdir}/1", data="1"), WriteEntry(path=f"{workdir}/2", data="2")],
                                  metadata={"batch": "b7"})
    assert [i.metadata for i in infos] == [{"batch": "b7"}, {"batch": "b7"}]
    with pytest.raises(InvalidArgumentException):  # validated client-side
        sbx.files.write(f"{workdir}/bad", "x", metadata={"bad key": "v"})


async def test_async_metadata(asbx, workdir):
    info = await asbx.files.write(f"{workdir}/a.txt", "x", metadata={"a": "1"})
    assert info.metadata == {"a": "1"}
    assert (await asbx.files.get_info(f"{workdir}/a.txt")).metadata == {"a": "1"}


def test_range_requests(sbx, envd, workdir):
    data = bytes(range(256)) * 40
    sbx.files.write(f"{workdir}/r.bin", data)
    url, params = envd.url + "/files", {"path": f"{workdir}/r.bin"}
    r = httpx.get(url, params=params, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = httpx.get(url, params=params, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = httpx.get(url, params=params, headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == data[10000:]
    r = httpx.get(url, params=params, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = httpx.get(url, params=params, headers={"Range": "bytes=0-1,5-6"})  # multi-range → whole file
    assert r.status_code == 200 and r.content == data
    r = httpx.get(url, params=params, headers={"Range": "bytes=0-3", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert r.status_code == 200  # stale validator → whole file
    assert httpx.get(url, params=params).headers["accept-ranges"] == "bytes"


def test_accept_encoding_negotiation(sbx, envd, workdir):
    data = b"z" * 100_000
    sbx.files.write(f"{workdir}/g.bin", data)
    url, params = envd.url + "/files", {"path": f"{workdir}/g.bin"}
    # plain SDK reads (httpx default "gzip, deflate") stay identity with a Content-Length
    r = httpx.get(url, params=params)
    assert "content-encoding" not in r.headers and r.headers["content-length"] == str(len(data))
    # the SDK's gzip=True sends exactly "gzip"
    with httpx.Client() as c:
        raw = c.send(c.build_request("GET", url, params=params, headers={"Accept-Encoding": "gzip"}), stream=True)
        body = b"".join(raw.iter_raw())
    assert raw.headers["content-encoding"] == "gzip" and gzip.decompress(body) == data and len(body) < 1000
    assert bytes(sbx.files.read(f"{workdir}/g.bin", format="bytes", gzip=True)) == data
    assert bytes(sbx.files.read(f"{workdir}/g.bin", format="bytes")) == data
    r = httpx.get(url, params=params, headers={"Accept-Encoding": "br, identity;q=0"})
    assert r.status_code == 406
    r = httpx.get(url, params=params, headers={"Accept-Encoding": "gzip, identity;q=0"})
    assert r.headers["content-encoding"] == "gzip" and r.content == data


def test_stream_read_format(sbx, workdir):
    data = os.urandom(1_000_000)
    sbx.files.write(f"{workdir}/s.bin", data)
    stream = sbx.files.read(f"{workdir}/s.bin", format="stream")
    assert b"".join(stream) == data


def test_many_files_one_multipart_upload_owned(sbx, workdir):
    entries = [WriteEntry(path=f"{workdir}/d{i % 7}/sub/f{i}.txt", data=f"content {i}") for i in range(120)]
    infos = sbx.files.write_files(entries)
    assert len(infos) == 120
    uid = pwd.getpwnam("user").pw_uid
    for i in (0, 59, 119):
        p = f"{workdir}/d{i % 7}/sub/f{i}.txt"
        assert open(p).read() == f"content {i}"
        assert os.stat(p).st_uid == uid and os.stat(os.path.dirname(p)).st_uid == uid
    r = sbx.files.write(f"{workdir}/root-owned.txt", "x", user="root")
    assert os.stat(r.path).st_uid == 0


def _rss_sampler(envd, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], envd.rss_kib())
        time.sleep(0.02)


@pytest.mark.slow
def test_1gib_sparse_download_streams_without_buffering(sbx, envd, workdir):
    os.makedirs(workdir)
    path = f"{workdir}/sparse"
    subprocess.run(["truncate", "-s", "1G", path], check=True)
    before = envd.rss_kib()
    stop, peak = threading.Event(), [before]
    t = threading.Thread(target=_rss_sampler, args=(envd, stop, peak))
    t.start()
    total = 0
    t0 = time.monotonic()
    try:
        with httpx.stream("GET", envd.url + "/files", params={"path": path}, timeout=120) as r:
            assert "content-length" not in r.headers   # big reads stream chunked, to EOF
            for chunk in r.iter_raw(1 << 20):
                total += len(chunk)
    finally:
        stop.set()
        t.join()
    elapsed = time.monotonic() - t0
    print(f"1 GiB download: {elapsed:.1f}s ({1024 / elapsed:.0f} MiB/s), envd RSS {before} → peak {peak[0]} KiB")
    assert total == 1 << 30
    assert peak[0] - before < 30 * 1024
