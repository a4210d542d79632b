"""Pause images across nodes, in process (issue 17): node A publishes a pause to the blob store,
node B (its own runtime and envd, the same store and database) adopts and resumes it.

The runtime half (a real CRIU image restored on another host's netns) is
tests/runtime/test_adoption.py; here the orchestrator's rules: the row moves to B only
through the conditional claim, a stale or missing image is a 409 and never used, a
sandbox with volumes stays on its node, and a single box publishes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandlot import blobstore
from sandlot.orchestrator.errors import Conflict
from sandlot.orchestrator.sandboxes import SandboxManager

from .conftest import EnvdFakeRuntime, FakeEnvd, Stack, StoreTemplate, launcher, make_settings, start_stack, stop_stack


@pytest.fixture
async def node_a(tmp_path: Path, store_template: StoreTemplate) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path, store_template, role="node", node_id="node-a",
                          blob_url=f"file://{tmp_path / 'blobs'}")
    try:
        yield s
    finally:
        await stop_stack(s)


def node_b(a: Stack, tmp_path: Path) -> tuple[SandboxManager, EnvdFakeRuntime]:
    data = tmp_path / "node-b"
    data.mkdir()
    settings = make_settings(data, role="node", node_id="node-b", blob_url=a.settings.blob_url,
                             database_url=a.settings.database_url)
    envd = FakeEnvd()
    runtime = EnvdFakeRuntime(envd, octet=78)
    return SandboxManager(settings, a.db, runtime, launcher, envd), runtime


async def _paused(a: Stack, **body: object) -> str:
    sandbox_id = str((await a.create(dict(body)))["sandboxID"])
    response = await a.client.post(f"/sandboxes/{sandbox_id}/pause", headers=a.headers())
    assert response.status_code == 204, response.text
    return sandbox_id


async def test_pause_is_published_and_another_node_resumes_it(node_a: Stack, tmp_path: Path) -> None:
    sandbox_id = await _paused(node_a)
    row = node_a.row(sandbox_id)
    assert row is not None and row.state == "paused" and row.node_id == "node-a"
    image = row.pause_image
    assert image is not None and image["node"] == "node-a" and image["memory"] is True
    assert blobstore.open_store(str(node_a.settings.blob_url)).has(image["digest"])
    old_ip = row.ip

    manager_b, runtime_b = node_b(node_a, tmp_path)
    resumed, changed = await manager_b.resume(node_a.team_id, sandbox_id, 300)
    assert changed and resumed.state == "running"
    row = node_a.row(sandbox_id)
    assert row is not None and row.node_id == "node-b" and row.state == "running"
    assert ("adopt_paused", sandbox_id) in runtime_b.calls
    assert runtime_b.sandboxes[sandbox_id].state == "running" and row.ip == runtime_b.sandboxes[sandbox_id].ip
    assert row.ip != old_ip
    # node A's stale copy is left alone: the row is B's and running (A's restart removes the copy)
    _, changed = await node_a.manager.pausing.resume(sandbox_id, 300)
    assert not changed and node_a.runtime.sandboxes[sandbox_id].state == "paused"
    await manager_b.kill(node_a.team_id, sandbox_id)


async def test_stale_or_missing_image_is_never_used(node_a: Stack, tmp_path: Path) -> None:
    sandbox_id = await _paused(node_a)
    row = node_a.row(sandbox_id)
    assert row is not None and row.pause_image is not None
    manager_b, runtime_b = node_b(node_a, tmp_path)
    # an image of an earlier pause (this pause's publishing never finished)
    node_a.update(sandbox_id, pause_image={**row.pause_image, "pausedAt": "2000-01-01T00:00:00"})
    with pytest.raises(Conflict, match="only be resumed on that node"):
        await manager_b.resume(node_a.team_id, sandbox_id, 300)
    node_a.update(sandbox_id, pause_image=None)
    with pytest.raises(Conflict):
        await manager_b.resume(node_a.team_id, sandbox_id, 300)
    assert ("adopt_paused", sandbox_id) not in runtime_b.calls
    row = node_a.row(sandbox_id)
    assert row is not None and row.node_id == "node-a" and row.state == "paused"
    # its own node still resumes it
    _, changed = await node_a.manager.resume(node_a.team_id, sandbox_id, 300)
    assert changed


async def test_corrupt_image_is_refused_and_the_sandbox_stays_paused(node_a: Stack, tmp_path: Path) -> None:
    sandbox_id = await _paused(node_a)
    row = node_a.row(sandbox_id)
    assert row is not None and row.pause_image is not None
    blob = Path(str(node_a.settings.blob_url).removeprefix("file://")) / "sha256" / row.pause_image["digest"]
    blob.write_bytes(b"swapped by someone with write access to the store")
    manager_b, runtime_b = node_b(node_a, tmp_path)
    with pytest.raises(Exception, match="corrupt"):
        await manager_b.resume(node_a.team_id, sandbox_id, 300)
    assert sandbox_id not in runtime_b.sandboxes
    row = node_a.row(sandbox_id)
    assert row is not None and row.node_id == "node-a" and row.state == "paused"


async def test_single_box_publishes_nothing(stack: Stack) -> None:
    sandbox_id = await _paused(stack)
    row = stack.row(sandbox_id)
    assert row is not None and row.state == "paused" and row.pause_image is None
    assert ("export_paused", sandbox_id) not in stack.runtime.calls
    assert not (stack.settings.data_dir / "blobs").exists()
