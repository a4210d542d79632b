"""Operations racing on one sandbox (asyncio interleavings, as concurrent requests to one server
produce): per-sandbox locks keep row, route and container in step."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sandlot.orchestrator.lifecycle import PAUSED, RUNNING
from tests.inprocess.conftest import Stack


@pytest.fixture(autouse=True)
def _interleaved(stack: Stack) -> Iterator[None]:
    """Every runtime call yields to the loop a few times: the racing requests really overlap."""
    stack.runtime.interleave = 3
    yield
    assert stack.runtime.yields > 0


async def test_two_connects_to_a_paused_sandbox_resume_it_once(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    a, b = await asyncio.gather(*(stack.client.post(f"/sandboxes/{sid}/connect", json={"timeout": 60},
                                                    headers=stack.headers()) for _ in range(2)))
    assert sorted((a.status_code, b.status_code)) == [200, 201]
    # one resume (a thaw of a hot pause or a CRIU restore): finished once
    assert stack.runtime.calls.count(("finish_resume", sid)) == 1
    assert stack.row(sid).state == RUNNING and stack.manager.route(sid) is not None  # type: ignore[union-attr]


async def test_pause_and_kill_racing_end_with_nothing_left(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    pause, kill = await asyncio.gather(
        stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers()),
        stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers()))
    assert kill.status_code == 204
    assert pause.status_code in (204, 404), pause.text
    await stack.manager.settled()   # the kill's teardown (answered before it finished)
    assert stack.row(sid) is None and stack.runtime.sandboxes == {} and stack.manager.route(sid) is None


async def test_two_kills_racing_remove_the_sandbox_once(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    responses = await asyncio.gather(*(stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
                                       for _ in range(2)))
    assert sorted(r.status_code for r in responses) in ([204, 204], [204, 404])
    await stack.manager.settled()
    assert stack.row(sid) is None and stack.runtime.sandboxes == {}
    assert sid not in stack.manager.lifecycle._locks


async def test_concurrent_creates_never_pass_the_quota(stack: Stack) -> None:
    stack.settings.quota_concurrent_sandboxes = 3
    responses = await asyncio.gather(*(stack.client.post("/sandboxes", json={"templateID": "base"},
                                                         headers=stack.headers()) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [429] * 3
    assert len(stack.rows()) == 3 and len(stack.runtime.sandboxes) == 3


async def test_a_snapshot_and_a_pause_racing_leave_a_consistent_sandbox(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    snap, pause = await asyncio.gather(
        stack.client.post(f"/sandboxes/{sid}/snapshots", json={}, headers=stack.headers()),
        stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers()))
    assert pause.status_code == 204
    assert snap.status_code in (201, 409), snap.text
    row = stack.row(sid)
    assert row is not None and row.state == PAUSED and stack.runtime.sandboxes[sid].state == "paused"
    assert stack.manager.route(sid) is None
