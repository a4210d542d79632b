"""Hot pause (``SANDLOT_HOT_PAUSE_S``): a memory pause freezes the container and keeps it; resume
thaws it; the cooler turns it into a CRIU pause later (by age, memory pressure, the setting
turned off, ``sandlot node``); kill, restart, reboot-resume and a dead frozen container."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sandlot.orchestrator.lifecycle import PAUSED, RUNNING
from tests.inprocess.conftest import Stack
from tests.inprocess.test_recovery import restarted


def _hot(stack: Stack) -> None:
    stack.settings.hot_pause_s = 600   # (off by default)


async def _paused_hot(stack: Stack, body: dict[str, object] | None = None) -> str:
    _hot(stack)
    sid = (await stack.create(body))["sandboxID"]
    response = await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    assert response.status_code == 204, response.text
    row = stack.row(sid)
    assert row is not None and row.state == PAUSED and row.pause_hot
    assert stack.runtime.sandboxes[sid].state == "frozen"
    return sid


async def test_a_hot_pause_freezes_and_a_resume_thaws(stack: Stack) -> None:
    forgotten: list[str] = []

    async def hook(ip: str) -> None:
        forgotten.append(ip)

    stack.manager.on_pause(hook)
    sid = await _paused_hot(stack, {"envVars": {"A": "1"}})
    row = stack.row(sid)
    assert row is not None and row.paused_at is not None
    assert stack.manager.route(sid) is None and forgotten == []   # its sockets are intact
    assert ("hot_pause", sid) in stack.runtime.calls and ("pause", sid) not in stack.runtime.calls
    listed = await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())
    assert listed.json()["state"] == "paused"
    assert (await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())).status_code == 409
    # snapshots and forks of a paused sandbox are refused as for any pause (E2B: 409)
    assert (await stack.client.post(f"/sandboxes/{sid}/snapshots", json={}, headers=stack.headers())).status_code == 409

    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={"timeout": 120}, headers=stack.headers())
    assert response.status_code == 201, response.text
    resumed = stack.row(sid)
    assert resumed is not None and resumed.state == RUNNING and not resumed.pause_hot and resumed.paused_at is None
    assert resumed.end_at > datetime.now(timezone.utc) + timedelta(seconds=60)
    assert stack.runtime.sandboxes[sid].state == "running"
    assert ("resume", sid) not in stack.runtime.calls   # no restore: a thaw
    route = stack.manager.route(sid)
    assert route is not None and route.ip == row.ip
    assert stack.envd.inits_at(row.ip) == []   # same envd, same identity


async def test_the_cooler_checkpoints_old_hot_pauses_and_they_resume_by_restore(stack: Stack) -> None:
    forgotten: list[str] = []

    async def hook(ip: str) -> None:
        forgotten.append(ip)

    stack.manager.on_pause(hook)
    old = await _paused_hot(stack)
    recent = await _paused_hot(stack)
    stack.update(old, paused_at=datetime.now(timezone.utc) - timedelta(seconds=601))
    stack.manager.cooler.available = lambda: 64 * 2**30   # plenty of memory
    await stack.manager.cooler.tick()
    cold = stack.row(old)
    assert cold is not None and cold.state == PAUSED and not cold.pause_hot
    assert stack.runtime.sandboxes[old].state == "paused" and stack.runtime.sandboxes[old].paused_memory is True
    assert forgotten == [cold.ip]
    assert stack.row(recent).pause_hot and stack.runtime.sandboxes[recent].state == "frozen"  # type: ignore[union-attr]
    response = await stack.client.post(f"/sandboxes/{old}/resume", json={}, headers=stack.headers())
    assert response.status_code == 201 and ("resume", old) in stack.runtime.calls


async def test_memory_pressure_cools_the_oldest_hot_pause_first(stack: Stack) -> None:
    first = await _paused_hot(stack)
    second = await _paused_hot(stack)
    stack.update(first, paused_at=datetime.now(timezone.utc) - timedelta(seconds=30))
    readings = iter([0, 64 * 2**30])   # short before the first cool-down, fine after it
    stack.manager.cooler.available = lambda: next(readings, 64 * 2**30)
    await stack.manager.cooler.tick()
    assert not stack.row(first).pause_hot and stack.runtime.sandboxes[first].state == "paused"  # type: ignore[union-attr]
    assert stack.row(second).pause_hot and stack.runtime.sandboxes[second].state == "frozen"  # type: ignore[union-attr]


async def test_hot_pauses_are_all_cooled_when_the_setting_is_off(stack: Stack) -> None:
    sid = await _paused_hot(stack)
    stack.settings.hot_pause_s = 0   # (a restart with SANDLOT_HOT_PAUSE_S=0)
    await stack.manager.cooler.tick()
    assert not stack.row(sid).pause_hot and stack.runtime.sandboxes[sid].state == "paused"  # type: ignore[union-attr]
    # and new pauses are cold at once, as before hot pauses existed
    other = (await stack.create())["sandboxID"]
    assert (await stack.client.post(f"/sandboxes/{other}/pause", headers=stack.headers())).status_code == 204
    assert not stack.row(other).pause_hot and stack.runtime.sandboxes[other].state == "paused"  # type: ignore[union-attr]


async def test_a_node_always_pauses_cold(stack: Stack) -> None:
    _hot(stack)
    stack.settings.role = "node"
    try:
        sid = (await stack.create())["sandboxID"]
        assert (await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())).status_code == 204
        assert not stack.row(sid).pause_hot and stack.runtime.sandboxes[sid].paused_memory is True  # type: ignore[union-attr]
    finally:
        stack.settings.role = "serve"


async def test_a_failed_cool_down_leaves_the_sandbox_hot_and_resumable(stack: Stack) -> None:
    sid = await _paused_hot(stack)
    stack.settings.hot_pause_s = 0
    stack.runtime.fail_next["pause"] = RuntimeError("criu: no space")
    await stack.manager.cooler.tick()
    assert stack.row(sid).pause_hot and stack.runtime.sandboxes[sid].state == "frozen"  # type: ignore[union-attr]
    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    assert response.status_code == 201 and stack.runtime.sandboxes[sid].state == "running"


async def test_kill_and_paused_ttl_remove_hot_pauses(stack: Stack) -> None:
    killed = await _paused_hot(stack)
    assert (await stack.client.delete(f"/sandboxes/{killed}", headers=stack.headers())).status_code == 204
    await stack.manager.settled()
    assert stack.row(killed) is None and killed not in stack.runtime.sandboxes
    stack.settings.paused_ttl_s = 3600
    old = await _paused_hot(stack)
    stack.update(old, paused_at=datetime.now(timezone.utc) - timedelta(hours=2))
    await stack.manager.expire_due()
    assert stack.row(old) is None and old not in stack.runtime.sandboxes


async def test_a_resume_whose_envd_never_answers_refreezes_it(stack: Stack) -> None:
    sid = await _paused_hot(stack)
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    stack.envd.unhealthy.add(ip)
    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    assert response.status_code == 500 and "stays paused" in response.json()["message"]
    row = stack.row(sid)
    assert row is not None and row.state == PAUSED and row.pause_hot and stack.runtime.sandboxes[sid].state == "frozen"
    stack.envd.unhealthy.clear()
    assert (await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())).status_code == 201


async def test_a_reboot_resume_of_a_hot_pause_cold_boots_from_disk(stack: Stack) -> None:
    sid = await _paused_hot(stack, {"envVars": {"A": "1"}})
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={"memory": False}, headers=stack.headers())
    assert response.status_code == 201, response.text
    assert stack.row(sid).state == RUNNING and stack.runtime.sandboxes[sid].state == "running"  # type: ignore[union-attr]
    inits = stack.envd.inits_at(ip)   # envd started afresh and was given its identity again
    assert len(inits) == 1 and inits[0].body["envVars"]["A"] == "1"


async def test_a_hot_pause_survives_a_restart_and_resumes(stack: Stack) -> None:
    sid = await _paused_hot(stack)
    async with restarted(stack) as manager:
        row = stack.row(sid)
        assert row is not None and row.state == PAUSED and row.pause_hot   # not thawed as a stray freeze
        assert stack.runtime.sandboxes[sid].state == "frozen" and manager.route(sid) is None
        resumed, was_paused = await manager.pausing.resume(sid, 60)
        assert was_paused and resumed.state == RUNNING and stack.runtime.sandboxes[sid].state == "running"


async def test_a_hot_pause_whose_container_died_is_lost(stack: Stack) -> None:
    across_restart = await _paused_hot(stack)
    meanwhile = await _paused_hot(stack)
    stack.runtime.die(across_restart)
    async with restarted(stack):
        assert stack.row(across_restart) is None and across_restart not in stack.runtime.sandboxes
    stack.runtime.die(meanwhile)
    await stack.manager.cooler.tick()
    assert stack.row(meanwhile) is None and meanwhile not in stack.runtime.sandboxes


async def test_auto_pause_at_timeout_is_hot_and_traffic_wakes_it(stack: Stack) -> None:
    _hot(stack)
    sid = (await stack.create({"autoPause": True, "autoResume": {"enabled": True}}))["sandboxID"]
    stack.update(sid, end_at=datetime.now(timezone.utc) - timedelta(seconds=5))
    await stack.manager.expire_due()
    row = stack.row(sid)
    assert row is not None and row.state == PAUSED and row.pause_hot and stack.runtime.sandboxes[sid].state == "frozen"
    route = await stack.manager.wake(sid)   # what the front door does for traffic to it
    assert route is not None and route.ip == row.ip
    assert stack.row(sid).state == RUNNING and stack.runtime.sandboxes[sid].state == "running"  # type: ignore[union-attr]
