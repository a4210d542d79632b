"""envd's own path for ``/files`` bodies (``sandlot/envd/files_fast.py``): the same answers as
the ASGI route, on keep-alive connections that mix it with h11, and clean failures (issue 14)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import NotEnoughSpaceException

from sandlot.envd.files_fast import parse_head

MiB = 1024 * 1024


def test_only_plain_files_requests_take_the_fast_path() -> None:
    assert parse_head(b"GET /files?path=a HTTP/1.1\r\nHost: x\r\n\r\n") is not None
    assert parse_head(b"POST /files HTTP/1.1\r\nContent-Length: 3\r\n\r\n") is not None
    for head in (b"GET /files HTTP/1.0\r\n\r\n", b"GET /filesx HTTP/1.1\r\n\r\n", b"PUT /files HTTP/1.1\r\n\r\n",
                 b"HEAD /files HTTP/1.1\r\n\r\n", b"POST /files HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                 b"POST /files HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", b"GET /files HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
                 b"POST /files HTTP/1.1\r\nContent-Encoding: gzip\r\n\r\n", b"GET /files HTTP/1.1\r\n folded\r\n\r\n",
                 b"GET /files HTTP/1.1\r\nBad Name: x\r\n\r\n", b"GET /files HTTP/1.1\r\nX: a\x00b\r\n\r\n"):
        assert parse_head(head) is None, head


def test_one_connection_mixes_fast_and_h11_requests(envd, sbx, workdir) -> None:
    """Uploads and big downloads (fast), small reads, errors, Connect calls and other routes (h11)
    one after another on the same keep-alive connection, each answered as by the ASGI route."""
    os.makedirs(workdir)
    big = os.urandom(3 * MiB + 17)
    with httpx.Client(base_url=envd.url, timeout=30) as c:
        for round_ in range(2):
            r = c.post("/files", params={"path": f"{workdir}/big"}, content=big,
                       headers={"content-type": "application/octet-stream", "x-metadata-k": f"v{round_}"})
            assert r.status_code == 200 and r.json() == [
                {"name": "big", "type": "file", "path": f"{workdir}/big", "metadata": {"k": f"v{round_}"}}]
            assert c.get("/health").status_code == 204
            r = c.get("/files", params={"path": f"{workdir}/big"})
            assert r.status_code == 200 and r.content == big
            assert r.headers["content-type"] == "application/octet-stream"
            assert r.headers["content-disposition"] == "inline; filename*=UTF-8''big"
            assert r.headers["transfer-encoding"] == "chunked"   # read to EOF, as on the ASGI route
            r = c.get("/files", params={"path": f"{workdir}/nope"})
            assert r.status_code == 404 and "does not exist" in r.json()["message"]
            r = c.post("/files", params={"path": f"{workdir}/big/under-a-file"}, content=b"x")
            assert r.status_code == 400
            r = c.post("/files", params={"path": f"{workdir}/mp"}, files={"file": ("mp", big)})
            assert r.status_code == 200 and r.json()[0]["path"] == f"{workdir}/mp"
            assert c.get("/files", params={"path": f"{workdir}/mp"}).content == big
            r = c.post("/process.Process/List", json={}, headers={"Connect-Protocol-Version": "1"})
            assert r.status_code == 200
            r = c.get("/files", params={"path": f"{workdir}/big"}, headers={"Range": "bytes=1-3"})
            assert r.status_code == 206 and r.content == big[1:4]
    assert sbx.files.read(f"{workdir}/big", format="bytes") == big


def test_sdk_round_trip_of_a_streamed_upload(sbx, workdir) -> None:
    data = os.urandom(5 * MiB)
    info = sbx.files.write(f"{workdir}/sub/f.bin", io.BytesIO(data))   # octet-stream, parents made
    assert info.path == f"{workdir}/sub/f.bin"
    got = hashlib.sha256()
    for chunk in sbx.files.read(f"{workdir}/sub/f.bin", format="stream"):
        got.update(chunk)
    assert got.digest() == hashlib.sha256(data).digest()
    sbx.files.write(f"{workdir}/sub/f.bin", b"short")   # truncated in place (multipart)
    assert sbx.files.read(f"{workdir}/sub/f.bin") == "short"


@pytest.fixture()
def tiny_fs(workdir) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    os.makedirs(workdir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", workdir], check=True)
    try:
        yield workdir
    finally:
        subprocess.run(["umount", "-l", workdir], check=False)


def test_a_full_disk_answers_507_after_the_body_and_keeps_the_connection(sbx, tiny_fs) -> None:
    data = os.urandom(4 * MiB)
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write(f"{tiny_fs}/full-stream", io.BytesIO(data))    # octet-stream
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write(f"{tiny_fs}/full-multipart", data)             # multipart
    os.unlink(f"{tiny_fs}/full-stream")
    os.unlink(f"{tiny_fs}/full-multipart")
    sbx.files.write(f"{tiny_fs}/fits", io.BytesIO(b"fits"))
    assert sbx.files.read(f"{tiny_fs}/fits") == "fits"


def test_a_client_gone_mid_transfer_leaves_envd_serving(envd, sbx, workdir) -> None:
    os.makedirs(workdir)
    port = int(envd.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:   # an upload cut short
        s.sendall(b"POST /files?path=%s/cut HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % (workdir.encode(), 8 * MiB) + b"x" * MiB)
        time.sleep(0.2)
    with open(f"{workdir}/big", "wb") as f:
        f.truncate(64 * MiB)
    with socket.create_connection(("127.0.0.1", port)) as s:   # a download abandoned
        s.sendall(b"GET /files?path=%s/big HTTP/1.1\r\nHost: x\r\n\r\n" % workdir.encode())
        assert s.recv(1024).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 10
    while os.path.getsize(f"{workdir}/cut") < MiB:   # the part that arrived is written
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert os.path.getsize(f"{workdir}/cut") == MiB
    assert sbx.files.write(f"{workdir}/after", io.BytesIO(b"ok")).path == f"{workdir}/after"
    assert httpx.get(envd.url + "/health").status_code == 204
