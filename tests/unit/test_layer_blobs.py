"""A build's layers and COPY uploads reach another node through the blob store (issue 17).

Two ``Settings`` with their own data dirs and one blob store stand for two ``sandlot node``
hosts: node A publishes its build's layers and receives an upload, node B maps the build's
paths to its own cache, fetches them (verified) and reads the upload; the shared images dir's
``base`` layer is used in place; a single box maps nothing and publishes nothing."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandlot.settings import Settings
from sandlot.store.models import Build
from sandlot.templates import uploads
from sandlot.templates.layer_blobs import LayerBlobs, LayerUnavailable


def _node(tmp_path: Path, name: str, role: str = "node") -> Settings:
    return Settings(data_dir=tmp_path / name, images_dir=tmp_path / "images", role=role,
                    blob_url=f"file://{tmp_path / 'blobs'}", node_token="shared-node-token", instance=name)


def _layer(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "app.conf").write_text("built on node a\n")
    if os.geteuid() == 0:
        os.mknod(root / "etc" / "removed", stat.S_IFCHR, os.makedev(0, 0))
        os.setxattr(root / "etc", "trusted.overlay.opaque", b"y")
    return root


async def test_layers_published_by_one_node_are_fetched_by_another(tmp_path: Path) -> None:
    a, b = _node(tmp_path, "a"), _node(tmp_path, "b")
    base = _layer(a.effective_images_dir / "templates" / "base" / "rootfs")
    own = _layer(a.templates_dir / "layers" / ("k" * 40) / "fs")
    build = Build(id="build-1", layers=[str(own), str(base)])
    build.layer_blobs = await LayerBlobs(a).publish([own, base])
    assert build.layer_blobs is not None and [e["path"] for e in build.layer_blobs] == [str(own)]   # base: shared

    blobs_b = LayerBlobs(b)
    paths = blobs_b.paths(build)
    assert paths[1] == base and paths[0].is_relative_to(b.templates_dir / "fetched")
    assert await blobs_b.ensure(build) == paths
    assert (paths[0] / "etc" / "app.conf").read_text() == "built on node a\n"
    if os.geteuid() == 0:
        assert stat.S_ISCHR(os.lstat(paths[0] / "etc" / "removed").st_mode)
        assert os.getxattr(paths[0] / "etc", "trusted.overlay.opaque") == b"y"
    # a build made on B from A's template records B's cache path: known to be in the store already
    again = await blobs_b.publish(paths)
    assert again == [{"path": str(paths[0]), "digest": build.layer_blobs[0]["digest"]}]


async def test_nodes_sharing_one_data_dir_path(tmp_path: Path) -> None:
    """Every host may use the same data dir path (deploy/): A's layer path is then inside B's own
    templates dir but absent there, and is fetched like any other node's layer."""
    a = _node(tmp_path, "a")
    own = _layer(a.templates_dir / "layers" / ("m" * 40) / "fs")
    build = Build(id="build-4", layers=[str(own)])
    build.layer_blobs = await LayerBlobs(a).publish([own])
    shutil.rmtree(own)   # "host b": the same path, without the layer
    blobs_b = LayerBlobs(a)
    paths = await blobs_b.ensure(build)
    assert paths[0].is_relative_to(a.templates_dir / "fetched")
    assert (paths[0] / "etc" / "app.conf").read_text() == "built on node a\n"


async def test_unpublished_layer_of_another_node_is_a_clear_error(tmp_path: Path) -> None:
    b = _node(tmp_path, "b")
    build = Build(id="build-2", layers=[str(tmp_path / "a" / "templates" / "layers" / "x" / "fs")], layer_blobs=None)
    with pytest.raises(LayerUnavailable, match="not published"):
        await LayerBlobs(b).ensure(build)


async def test_single_box_uses_paths_as_recorded(tmp_path: Path) -> None:
    serve = _node(tmp_path, "a", role="serve")
    build = Build(id="build-3", layers=["/somewhere/else/fs"])
    blobs = LayerBlobs(serve)
    assert blobs.paths(build) == [Path("/somewhere/else/fs")]
    assert await blobs.publish([Path("/somewhere/else/fs")]) is None
    assert not (tmp_path / "blobs").exists()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_upload_received_by_one_node_is_read_by_another(tmp_path: Path) -> None:
    import io
    import tarfile

    a, b = _node(tmp_path, "a"), _node(tmp_path, "b")
    store_a = uploads.UploadStore(a.templates_dir / "files", **uploads.cluster_options(a))
    store_b = uploads.UploadStore(b.templates_dir / "files", **uploads.cluster_options(b))
    files_hash = "f" * 64
    token = store_a.token("team-1", "tpl-1", files_hash)
    assert store_b.check(token, "tpl-1", files_hash) == "team-1"   # a link signed by A, used at B
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    await store_b.receive("team-1", files_hash, _chunks(buf.getvalue()))
    assert store_a.present("team-1", files_hash) and not store_a.present("team-2", files_hash)
    copy = store_a.snapshot("team-1", files_hash, tmp_path / "ctx.tar")
    assert copy is not None and copy.read_bytes() == buf.getvalue()
    serve = uploads.UploadStore(tmp_path / "serve-files", **uploads.cluster_options(_node(tmp_path, "s", "serve")))
    assert serve.remote is None and not serve.present("team-1", files_hash)
