"""A server restart: a new ``SandboxManager`` over the same store and the containers that
survived (the same ``FakeRuntime``) matches one against the other."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sandlot.orchestrator.lifecycle import PAUSED, PAUSING, RESUMING, RUNNING
from sandlot.orchestrator.sandboxes import SandboxManager
from sandlot.runtime.base import SandboxSpec
from tests.inprocess.conftest import Stack


@asynccontextmanager
async def restarted(stack: Stack) -> AsyncIterator[SandboxManager]:
    manager = stack.new_manager()
    await manager.recover()
    try:
        yield manager
    finally:
        await manager.close()


async def test_a_running_sandbox_is_readopted_with_its_route_and_policy(stack: Stack) -> None:
    body = await stack.create({"network": {"denyOut": ["8.8.8.8"], "allowPublicTraffic": False}})
    sid = body["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    old_route = stack.manager.route(sid)
    stack.runtime.egress.pop(ip)   # the nft table is rebuilt at start: policies come from the store
    async with restarted(stack) as manager:
        route = manager.route(sid)
        assert route == old_route and route is not None and route.traffic_token == body["trafficAccessToken"]
        assert stack.runtime.egress[ip].deny == ("8.8.8.8/32",)
        assert stack.row(sid).state == RUNNING  # type: ignore[union-attr]
        assert (sid, body["envdAccessToken"]) in manager.signing_tokens()


async def test_a_row_whose_container_is_gone_is_dropped(stack: Stack) -> None:
    gone = (await stack.create())["sandboxID"]
    kept = (await stack.create())["sandboxID"]
    await stack.runtime.kill(gone)   # lost with the host's reboot, say
    async with restarted(stack) as manager:
        assert stack.row(gone) is None and manager.route(gone) is None
        assert manager.route(kept) is not None and stack.row(kept).state == RUNNING  # type: ignore[union-attr]


async def test_a_dead_container_is_dropped_and_removed(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    stack.runtime.die(sid)
    async with restarted(stack) as manager:
        assert stack.row(sid) is None and manager.route(sid) is None
        assert sid not in stack.runtime.sandboxes


async def test_an_orphan_container_is_killed(stack: Stack) -> None:
    kept = (await stack.create())["sandboxID"]
    spec = SandboxSpec(sandbox_id="orphan0000000000000000", layers=[], cpu_count=1, memory_mb=128, pids_limit=8,
                       args=["/bin/true"], env={})
    await stack.runtime.create(spec)   # a create that crashed before its row was written
    async with restarted(stack):
        assert "orphan0000000000000000" not in stack.runtime.sandboxes
        assert kept in stack.runtime.sandboxes


async def test_a_frozen_container_is_thawed(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    stack.runtime.freeze(sid)   # the server was killed in the middle of a snapshot
    async with restarted(stack) as manager:
        assert stack.runtime.sandboxes[sid].state == "running" and manager.route(sid) is not None


async def test_interrupted_pauses_and_resumes_are_settled_from_what_the_runtime_has(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    still_running = (await stack.create())["sandboxID"]
    image_complete = (await stack.create())["sandboxID"]
    resuming_paused = (await stack.create())["sandboxID"]
    lost = (await stack.create())["sandboxID"]
    paused = (await stack.create())["sandboxID"]
    # crashes at different points: the row says pausing/resuming, the runtime knows better
    stack.update(still_running, state=PAUSING)
    await stack.runtime.pause(image_complete)
    stack.update(image_complete, state=PAUSING)
    await stack.runtime.pause(resuming_paused)
    stack.update(resuming_paused, state=RESUMING)
    await stack.runtime.kill(lost)
    stack.update(lost, state=PAUSING)
    assert (await stack.client.post(f"/sandboxes/{paused}/pause", headers=stack.headers())).status_code == 204
    async with restarted(stack) as manager:
        assert stack.row(still_running).state == RUNNING and manager.route(still_running) is not None  # type: ignore[union-attr]
        for sid in (image_complete, resuming_paused, paused):
            row = stack.row(sid)
            assert row is not None and row.state == PAUSED and row.paused_at is not None, sid
            assert manager.route(sid) is None and sid in stack.runtime.paused_ids()
        assert stack.row(lost) is None
        for sid in (still_running, image_complete, resuming_paused, lost, paused):
            assert ("recover_pause", sid) in stack.runtime.calls, sid
        # a settled paused sandbox resumes normally through the restarted manager
        row, resumed = await manager.resume(stack.team_id, image_complete, 60)
        assert resumed and row.state == RUNNING and manager.route(image_complete) is not None


async def test_a_paused_sandbox_whose_image_is_gone_is_dropped(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    del stack.runtime.sandboxes[sid]   # the pause image was deleted behind the server's back
    async with restarted(stack):
        assert stack.row(sid) is None


async def test_paused_images_and_snapshot_dirs_without_a_row_are_removed(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    with stack.db.session() as session, session.begin():   # a kill that crashed after deleting the row
        from sandlot.store.models import Sandbox

        session.delete(session.get(Sandbox, sid))
    stray = stack.settings.snapshots_dir / "strayzzzzzzzzzzzzzzz"
    stray.mkdir(parents=True)
    async with restarted(stack):
        assert sid not in stack.runtime.sandboxes
        assert not stray.exists()


async def test_a_create_interrupted_half_way_is_cleaned(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    stack.update(sid, state="creating")   # the server died between the runtime's create and activate
    async with restarted(stack) as manager:
        assert stack.row(sid) is None and sid not in stack.runtime.sandboxes and manager.route(sid) is None


async def test_a_sandbox_whose_policy_cannot_be_restored_is_not_left_unfenced(stack: Stack) -> None:
    from sandlot.runtime.base import SandboxRuntimeError

    sid = (await stack.create({"network": {"denyOut": ["0.0.0.0/0"]}}))["sandboxID"]
    stack.runtime.fail_next["set_egress"] = SandboxRuntimeError("nft: table rebuilt without the slot")
    async with restarted(stack) as manager:
        assert stack.row(sid) is None and sid not in stack.runtime.sandboxes and manager.route(sid) is None
