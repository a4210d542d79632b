"""Pause, resume, connect; the reaper's decisions (auto-pause or kill at timeout, paused TTL) and
sandboxes that die on their own."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from sandlot.orchestrator.lifecycle import PAUSED, RUNNING
from tests.inprocess.conftest import Stack

PAST = timedelta(seconds=5)


async def test_pause_then_resume(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    paused_ips: list[str] = []

    async def hook(ip: str) -> None:
        paused_ips.append(ip)

    stack.manager.on_pause(hook)
    sid = (await stack.create({"envVars": {"A": "1"}}))["sandboxID"]
    row = stack.row(sid)
    assert row is not None
    response = await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    assert response.status_code == 204
    paused = stack.row(sid)
    assert paused is not None and paused.state == PAUSED and paused.paused_at is not None
    assert stack.manager.route(sid) is None
    assert stack.runtime.sandboxes[sid].state == "paused" and stack.runtime.sandboxes[sid].paused_memory is True
    assert paused_ips == [row.ip]
    listed = await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())
    assert listed.json()["state"] == "paused" and listed.json()["domain"] is None

    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={"timeout": 120}, headers=stack.headers())
    assert response.status_code == 201
    assert response.json()["sandboxID"] == sid and response.json()["envdAccessToken"] == row.envd_access_token
    resumed = stack.row(sid)
    assert resumed is not None and resumed.state == RUNNING and resumed.paused_at is None
    assert resumed.end_at > datetime.now(timezone.utc) + timedelta(seconds=60)
    route = stack.manager.route(sid)
    assert route is not None and route.state == RUNNING and route.ip == resumed.ip == row.ip
    assert stack.runtime.sandboxes[sid].state == "running"
    assert ("finish_resume", sid) in stack.runtime.calls
    # a memory resume keeps envd's identity: no /init needed, none sent
    assert stack.envd.inits_at(row.ip) == []
    again = await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    assert again.status_code == 409 and again.json()["code"] == 409


async def test_connect_is_200_on_a_running_sandbox_and_201_on_a_paused_one(stack: Stack) -> None:
    sid = (await stack.create({"timeout": 30}))["sandboxID"]
    end = stack.row(sid).end_at  # type: ignore[union-attr]
    running = await stack.client.post(f"/sandboxes/{sid}/connect", json={"timeout": 600}, headers=stack.headers())
    assert running.status_code == 200 and running.json()["sandboxID"] == sid
    assert stack.row(sid).end_at > end  # type: ignore[union-attr]   # extended
    shorter = await stack.client.post(f"/sandboxes/{sid}/connect", json={"timeout": 10}, headers=stack.headers())
    assert shorter.status_code == 200
    assert stack.row(sid).end_at > end  # type: ignore[union-attr]   # never shortened by connect
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    resumed = await stack.client.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 60}, headers=stack.headers())
    assert resumed.status_code == 201 and resumed.json()["sandboxID"] == sid
    assert stack.row(sid).state == RUNNING and stack.manager.route(sid) is not None  # type: ignore[union-attr]


async def test_a_resume_whose_envd_never_comes_up_stays_paused(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    stack.envd.unhealthy.add(ip)
    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    assert response.status_code == 500
    assert response.json()["code"] == 500 and "stays paused" in response.json()["message"]
    assert stack.row(sid).state == PAUSED and stack.manager.route(sid) is None  # type: ignore[union-attr]
    assert ("abort_resume", sid) in stack.runtime.calls
    assert stack.runtime.sandboxes[sid].state == "paused" and stack.runtime.sandboxes[sid].paused_memory is True
    assert sid not in [s for s, _ in stack.manager.lifecycle.routed()]
    # nothing lost: once envd answers, the same sandbox resumes
    stack.envd.unhealthy.clear()
    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    assert response.status_code == 201 and stack.row(sid).state == RUNNING  # type: ignore[union-attr]


async def test_a_filesystem_only_resume_gives_envd_its_identity_again(stack: Stack) -> None:
    sid = (await stack.create({"envVars": {"A": "1"}}))["sandboxID"]
    row = stack.row(sid)
    assert row is not None
    response = await stack.client.post(f"/sandboxes/{sid}/pause", json={"memory": False}, headers=stack.headers())
    assert response.status_code == 204
    assert (await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())).status_code == 201
    inits = stack.envd.inits_at(row.ip)
    assert len(inits) == 1
    assert inits[0].token == row.envd_access_token and inits[0].body["accessToken"] == row.envd_access_token
    assert inits[0].body["envVars"]["A"] == "1"


async def test_expiry_pauses_an_auto_pause_sandbox_and_kills_the_others(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    auto = (await stack.create({"autoPause": True}))["sandboxID"]
    plain = (await stack.create())["sandboxID"]
    live = (await stack.create())["sandboxID"]
    now = datetime.now(timezone.utc)
    stack.update(auto, end_at=now - PAST)
    stack.update(plain, end_at=now - PAST)
    await stack.manager.expire_due()
    assert stack.row(auto).state == PAUSED and stack.runtime.sandboxes[auto].state == "paused"  # type: ignore[union-attr]
    assert stack.row(plain) is None and plain not in stack.runtime.sandboxes
    assert stack.manager.route(plain) is None and stack.manager.route(auto) is None
    assert stack.row(live).state == RUNNING and stack.manager.route(live) is not None  # type: ignore[union-attr]
    # a paused sandbox has no timeout of its own: the next tick leaves it alone
    await stack.manager.expire_due()
    assert stack.row(auto).state == PAUSED  # type: ignore[union-attr]


async def test_an_auto_pause_that_fails_at_timeout_kills_the_sandbox(stack: Stack) -> None:
    sid = (await stack.create({"autoPause": True}))["sandboxID"]
    stack.runtime.criu_error = "no CRIU"
    stack.update(sid, end_at=datetime.now(timezone.utc) - PAST)
    await stack.manager.expire_due()
    assert stack.row(sid) is None and stack.runtime.sandboxes == {}


async def test_paused_sandboxes_past_the_retention_are_deleted(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    stack.settings.paused_ttl_s = 3600
    old = (await stack.create())["sandboxID"]
    recent = (await stack.create())["sandboxID"]
    for sid in (old, recent):
        assert (await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())).status_code == 204
    stack.update(old, paused_at=datetime.now(timezone.utc) - timedelta(hours=2))
    await stack.manager.expire_due()
    assert stack.row(old) is None and old not in stack.runtime.sandboxes
    assert stack.row(recent).state == PAUSED and recent in stack.runtime.paused_ids()  # type: ignore[union-attr]


async def test_paused_sandboxes_are_kept_forever_without_a_retention(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    stack.update(sid, paused_at=datetime.now(timezone.utc) - timedelta(days=30))
    await stack.manager.expire_due()
    assert stack.row(sid).state == PAUSED  # type: ignore[union-attr]


async def test_a_sandbox_that_died_is_buried_and_its_death_reported(stack: Stack) -> None:
    deaths: list[tuple[str, str]] = []
    stack.manager.death_hooks.append(lambda sid, reason: deaths.append((sid, reason)))
    oom = (await stack.create())["sandboxID"]
    exited = (await stack.create())["sandboxID"]
    alive = (await stack.create())["sandboxID"]
    stack.runtime.die(oom, oom=True)
    stack.runtime.die(exited)
    await stack.manager.bury_dead()
    assert sorted(deaths) == sorted([(oom, "oom"), (exited, "exited")])
    for sid in (oom, exited):
        assert stack.row(sid) is None and sid not in stack.runtime.sandboxes and stack.manager.route(sid) is None
        assert (await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())).status_code == 404
    assert stack.row(alive).state == RUNNING and stack.manager.route(alive) is not None  # type: ignore[union-attr]


async def test_bury_dead_leaves_paused_sandboxes_alone(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    await stack.manager.bury_dead()
    assert stack.row(sid).state == PAUSED and sid in stack.runtime.sandboxes  # type: ignore[union-attr]


async def test_a_pause_whose_sandbox_died_is_settled_by_the_reaper(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    stack.runtime.die(sid)
    response = await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    assert response.status_code == 500 and response.json()["code"] == 500
    # as bury_dead (or the next start's recover_pause) would have it: the dead sandbox is gone
    assert await stack.reap_until(lambda: stack.row(sid) is None)


async def test_a_network_update_replaces_egress_and_keeps_ingress(stack: Stack) -> None:
    body = await stack.create({"network": {"denyOut": ["8.8.8.8"], "allowPublicTraffic": False}})
    sid = body["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    response = await stack.client.put(f"/sandboxes/{sid}/network", json={"denyOut": ["1.1.1.1"]},
                                      headers=stack.headers())
    assert response.status_code == 204
    assert stack.runtime.egress[ip].deny == ("1.1.1.1/32",)
    row = stack.row(sid)
    assert row is not None and row.network == {"allowPublicTraffic": False, "denyOut": ["1.1.1.1"]}
    assert stack.manager.route(sid).traffic_token == body["trafficAccessToken"]  # type: ignore[union-attr]
    # a paused sandbox's rules come back on resume, from the store
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    stack.runtime.egress.pop(ip)
    await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    assert stack.runtime.egress[ip].deny == ("1.1.1.1/32",)


@pytest.mark.parametrize("case", ["kill", "auto-pause", "paused-ttl"])
async def test_a_sandbox_extended_while_the_reaper_works_is_left_alone(stack: Stack, case: str) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    first = (await stack.create({"autoPause": case == "auto-pause"}))["sandboxID"]
    second = (await stack.create({"autoPause": case == "auto-pause"}))["sandboxID"]
    for sid in (first, second):
        if case == "paused-ttl":
            assert (await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())).status_code == 204
            stack.update(sid, paused_at=datetime.now(timezone.utc) - timedelta(hours=2))
        else:
            stack.update(sid, end_at=datetime.now(timezone.utc) - PAST)
    stack.settings.paused_ttl_s = 3600
    method = "pause" if case == "auto-pause" else "kill"
    busy, go_on = asyncio.Event(), asyncio.Event()
    original = getattr(stack.runtime, method)
    blocked: list[str] = []

    async def slow_first_call(sandbox_id: str, **kwargs: object) -> object:
        if not blocked:   # the reaper's first runtime call of the tick takes a while, as runc's do
            blocked.append(sandbox_id)
            busy.set()
            await go_on.wait()
        return await original(sandbox_id, **kwargs)

    setattr(stack.runtime, method, slow_first_call)
    reaper = asyncio.create_task(stack.manager.expire_due())
    await busy.wait()
    later = second if blocked[0] == first else first
    if case == "paused-ttl":
        revived = await stack.client.post(f"/sandboxes/{later}/resume", json={}, headers=stack.headers())
        assert revived.status_code == 201
    else:
        extended = await stack.client.post(f"/sandboxes/{later}/timeout", json={"timeout": 600},
                                           headers=stack.headers())
        assert extended.status_code == 204
    go_on.set()
    await reaper
    row = stack.row(later)
    assert row is not None and row.state == RUNNING and stack.manager.route(later) is not None
