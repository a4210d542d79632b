"""The blob store (issue 17): both backends store by sha256, refuse corrupt objects and
carry trees (whiteouts, overlay xattrs, owners, hard links, symlinks) intact.

The S3 backend talks to moto's server on loopback (no internet), as it would to any
S3-compatible endpoint."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandlot import blobstore, blobtree
from sandlot.blobstore import BlobCorrupt, BlobMissing, BlobStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    try:
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="sandlot-blobs")
        yield f"s3://sandlot-blobs/cluster-a?endpoint={endpoint}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return blobstore.open_store(f"file://{tmp_path / 'blobs'}")
    return blobstore.open_store(request.getfixturevalue("s3_url"))


def _corrupt(store: BlobStore, digest: str, tmp_path: Path) -> None:
    """Overwrite the object behind ``digest`` with other bytes, as a writer of shared storage could."""
    if isinstance(store, blobstore.FileBlobStore):
        (store.root / "sha256" / digest).write_bytes(b"not what was stored")
    else:
        assert isinstance(store, blobstore.S3BlobStore)
        store._s3.put_object(Bucket=store.bucket, Key=f"{store.prefix}/sha256/{digest}", Body=b"swapped")


def test_put_fetch_by_digest(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 << 20))
    digest = store.put_file(src)
    assert digest == blobstore.sha256_file(src)
    assert store.has(digest) and not store.has("0" * 64)
    assert store.put_file(src) == digest   # idempotent
    out = tmp_path / "out.bin"
    store.fetch(digest, out)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(BlobMissing):
        store.fetch("1" * 64, tmp_path / "missing")
    with pytest.raises(blobstore.BlobError):
        store.fetch("../../etc/passwd", tmp_path / "x")


def test_corrupt_object_is_refused(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"layer bytes" * 1000)
    digest = store.put_file(src)
    _corrupt(store, digest, tmp_path)
    out = tmp_path / "out.bin"
    with pytest.raises(BlobCorrupt):
        blobstore.copy_out(store, digest, out)
    assert not out.exists()   # nothing half-trusted left behind
    assert not list(tmp_path.glob(".out.bin*"))


def test_refs(store: BlobStore) -> None:
    assert store.get_ref("uploads/team-1/abc") is None
    store.put_ref("uploads/team-1/abc", "2" * 64)
    assert store.get_ref("uploads/team-1/abc") == "2" * 64
    for bad in ("../x", "a/../../b", "/abs", "a//b", ""):
        with pytest.raises(blobstore.BlobError):
            store.put_ref(bad, "2" * 64)


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts, trusted.* xattrs and owners need root")
def test_layer_tree_round_trip(store: BlobStore, tmp_path: Path) -> None:
    """What an overlay upper dir holds comes back exactly: whiteouts, opaque dirs, owners,
    setuid bits, hard links, symlinks (absolute ones too, never followed)."""
    src = tmp_path / "layer"
    (src / "etc" / "opaque").mkdir(parents=True)
    os.setxattr(src / "etc" / "opaque", "trusted.overlay.opaque", b"y")
    os.mknod(src / "etc" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (src / "usr" / "bin").mkdir(parents=True)
    tool = src / "usr" / "bin" / "tool"
    tool.write_bytes(b"\x7fELF" + b"x" * 100)
    os.chown(tool, 100000, 100001)
    os.chmod(tool, 0o4755)
    os.link(tool, src / "usr" / "bin" / "tool2")
    os.symlink("/usr/bin/tool", src / "usr" / "bin" / "abs-link")
    digest = blobtree.publish(store, src, tmp_path / "scratch")
    dest = tmp_path / "fetched"
    blobtree.fetch(store, digest, dest)
    assert os.getxattr(dest / "etc" / "opaque", "trusted.overlay.opaque") == b"y"
    st = os.lstat(dest / "etc" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    st = os.stat(dest / "usr" / "bin" / "tool")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (100000, 100001, 0o4755)
    assert st.st_ino == os.stat(dest / "usr" / "bin" / "tool2").st_ino
    assert os.readlink(dest / "usr" / "bin" / "abs-link") == "/usr/bin/tool"
    assert (dest / "usr" / "bin" / "tool").read_bytes() == tool.read_bytes()
    assert not list(tmp_path.glob(".fetched*"))
