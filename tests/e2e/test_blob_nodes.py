"""Two node-role servers, one PostgreSQL, one blob store (issue 17), driven by the unmodified e2b SDK.

Each server has its own data dir (sandboxes, layers, keys), runtime state, instance and subnet,
as separate hosts would; they share only the database, the blob store (``file://``) and the
images dir (the ``base`` rootfs and envd runtime: the install). Without the router, the SDK is
pointed at one node or the other:
- a sandbox paused on node A is resumed through node B (``connect``): its files and processes
  (a memory resume) come along, and the row says node B holds it;
- a template built on node A starts on node B, whose layers came from the blob store; a template
  node B builds from it starts on node A;
- a snapshot taken on node A starts on node B (files and processes), fetched from the blob store.

The full cluster (router, placement, netns per node) is tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox, Template
from sqlalchemy import create_engine, text

from sandlot import ids
from tests import postgres
from tests.e2e.server import STARTED, Server, data_dir, sdk_pointed_at

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(postgres.available() is not None, reason=str(postgres.available()))]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, str]]:
    # the node data dirs must be searchable by the sandboxes' user-namespace root (tmp_path is 0700)
    root = data_dir() / "test-blob-nodes" / uuid.uuid4().hex[:8]
    images = data_dir()
    with postgres.running_postgres() as pg:
        url = pg.url()
        key = ids.new_api_key()
        servers = []
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
            servers.append(Server(workdir=tmp_path_factory.mktemp(f"node-{name}"), api_key=key, extra_env={
                "SANDLOT_DATABASE_URL": url, "SANDLOT_DATA_DIR": str(root / name), "SANDLOT_IMAGES_DIR": str(images),
                "SANDLOT_LXCFS_PATH": str(images / "lxcfs"), "SANDLOT_ROLE": "node",
                "SANDLOT_NODE_ID": f"test-node-{name}", "SANDLOT_BLOB_URL": f"file://{root / 'blobs'}",
                "SANDLOT_WARM_POOL_SIZE": "0"}))
        try:
            for srv in servers:   # one after the other: the first runs the migrations
                srv.start()
            yield servers[0], servers[1], url
        finally:
            for srv in servers:
                srv.reset()   # while PostgreSQL still runs: reset reads the rows
                STARTED.remove(srv)
            shutil.rmtree(root, ignore_errors=True)


def _node_of(url: str, sandbox_id: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT node_id FROM sandboxes WHERE id = :id"), {"id": sandbox_id}).scalar()
    finally:
        engine.dispose()


def test_paused_on_one_node_resumes_on_the_other(nodes: tuple[Server, Server, str]) -> None:
    a, b, url = nodes
    with sdk_pointed_at(a):
        sbx = Sandbox.create(timeout=300)
        sbx.files.write("/home/user/kept.txt", "kept across nodes")
        sbx.commands.run("sleep 3600", background=True)
        assert _node_of(url, sbx.sandbox_id) == "test-node-a"
        assert sbx.pause() is True
    with sdk_pointed_at(b):
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=300)
        try:
            assert _node_of(url, sbx.sandbox_id) == "test-node-b"
            assert resumed.files.read("/home/user/kept.txt") == "kept across nodes"
            assert "sleep 3600" in resumed.commands.run("ps -eo args").stdout   # memory came along
            assert resumed.commands.run("echo moved").stdout.strip() == "moved"
        finally:
            resumed.kill()
    assert "adopted a paused sandbox from another node" in b.log_tail(400)


def test_snapshot_taken_on_one_node_starts_on_the_other(nodes: tuple[Server, Server, str]) -> None:
    """E2B starts a snapshot anywhere: taken through A, started through B from the blob store,
    with its files and its processes (a memory snapshot), on B's own address."""
    a, b, _url = nodes
    with sdk_pointed_at(a):
        src = Sandbox.create(timeout=300)
        try:
            src.files.write("/home/user/snap.txt", "snapshot across nodes")
            src.commands.run("sleep 3600", background=True)
            info = src.create_snapshot()
        finally:
            src.kill()
    with sdk_pointed_at(b):
        clone = Sandbox.create(info.snapshot_id, timeout=120)
        try:
            assert clone.files.read("/home/user/snap.txt") == "snapshot across nodes"
            assert "sleep 3600" in clone.commands.run("ps -eo args").stdout   # memory came along
            assert clone.commands.run("echo here").stdout.strip() == "here"
        finally:
            clone.kill()
        assert Sandbox.delete_snapshot(info.snapshot_id) is True
    assert "snapshot published" in a.log_tail(400)
    assert "snapshot fetched from the blob store" in b.log_tail(400)


def test_template_built_on_one_node_starts_on_the_other(nodes: tuple[Server, Server, str]) -> None:
    a, b, _ = nodes
    name = f"blob-nodes-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    Template.build(Template().from_template("base").run_cmd(f"echo {marker} > /home/user/x"), name,
                   cpu_count=1, memory_mb=512, api_key=a.api_key, api_url=a.url)
    with sdk_pointed_at(b):
        sbx = Sandbox.create(name, timeout=120)
        try:
            assert sbx.files.read("/home/user/x").strip() == marker
        finally:
            sbx.kill()
    fetched = Path(b.extra_env["SANDLOT_DATA_DIR"]) / "templates" / "fetched"
    assert any(p.is_dir() for p in fetched.iterdir())   # node B's copy of A's layer, from the blob store
    # and back: B builds FROM A's template (its layers from B's cache), A starts that build
    second = uuid.uuid4().hex
    Template.build(Template().from_template(name).run_cmd(f"echo {second} > /home/user/y"), f"{name}-2",
                   cpu_count=1, memory_mb=512, api_key=b.api_key, api_url=b.url)
    with sdk_pointed_at(a):
        sbx = Sandbox.create(f"{name}-2", timeout=120)
        try:
            assert sbx.files.read("/home/user/x").strip() == marker
            assert sbx.files.read("/home/user/y").strip() == second
        finally:
            sbx.kill()
