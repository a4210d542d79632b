"""The state machine's table, and create/kill through the API: what each leaves behind (row,
route, container, lock), including creates that fail half-way and creates over quota."""

from __future__ import annotations

import itertools

import pytest

from sandlot.orchestrator.lifecycle import (CREATING, GONE, KILLING, PAUSED, PAUSING, RESUMING, RUNNING,
                                            TRANSITIONS, IllegalTransition, check_move)
from sandlot.runtime.base import SandboxRuntimeError
from tests.inprocess.conftest import Stack

STATES = (CREATING, RUNNING, PAUSING, PAUSED, RESUMING, KILLING)

LEGAL = {
    (CREATING, RUNNING), (CREATING, GONE),
    (RUNNING, PAUSING), (RUNNING, KILLING), (RUNNING, GONE),
    (PAUSING, PAUSED), (PAUSING, RUNNING), (PAUSING, KILLING), (PAUSING, GONE),
    (PAUSED, RESUMING), (PAUSED, KILLING), (PAUSED, GONE),
    (RESUMING, RUNNING), (RESUMING, PAUSED), (RESUMING, KILLING), (RESUMING, GONE),
    (KILLING, GONE),
}
"""The moves the lifecycle diagram allows (sandlot/orchestrator/lifecycle.py), written out."""


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATES, (*STATES, GONE))))
def test_every_move_is_legal_exactly_when_the_table_says(current: str, new: str) -> None:
    if (current, new) in LEGAL:
        check_move(current, new)
    else:
        with pytest.raises(IllegalTransition, match=f"{current} → {new}"):
            check_move(current, new)


def test_the_table_has_no_other_states_and_gone_is_final() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert all(GONE in moves for moves in TRANSITIONS.values())   # a lost container, from any state
    for new in (*STATES, GONE):
        with pytest.raises(IllegalTransition):
            check_move(GONE, new)
        with pytest.raises(IllegalTransition):
            check_move("no-such-state", new)


async def test_create_makes_a_running_row_a_route_and_a_container(stack: Stack) -> None:
    body = await stack.create({"metadata": {"k": "v"}, "envVars": {"FOO": "bar"}, "timeout": 60})
    sid = body["sandboxID"]
    assert body["templateID"] == stack.template.id and body["alias"] == "base"
    row = stack.row(sid)
    assert row is not None and row.state == RUNNING and row.team_id == stack.team_id
    assert row.metadata_ == {"k": "v"} and row.env_vars == {"FOO": "bar"}
    assert row.ip == stack.runtime.sandboxes[sid].ip and stack.runtime.sandboxes[sid].state == "running"
    route = stack.manager.route(sid)
    assert route is not None and route.ip == row.ip and route.state == RUNNING
    assert route.access_token == body["envdAccessToken"] == row.envd_access_token
    assert route.traffic_token is None   # public by default
    # envd booted with the sandbox's identity (token, env vars) in its config, nothing else needed
    spec = stack.runtime.specs[sid]
    assert '"FOO": "bar"' in spec.env["SANDLOT_ENVD_INIT"] and stack.envd.tokens[row.ip] == row.envd_access_token
    got = await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())
    assert got.status_code == 200 and got.json()["state"] == "running" and got.json()["metadata"] == {"k": "v"}


async def test_kill_removes_row_route_container_and_lock(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    response = await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
    assert response.status_code == 204
    # answered before the teardown may have finished: unrouted, invisible, egress shut, processes dead
    assert stack.manager.route(sid) is None
    assert (await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())).status_code == 404
    assert ("stop", sid) in stack.runtime.calls
    assert sid not in stack.runtime.sandboxes or stack.runtime.sandboxes[sid].state == "dead"
    assert ip not in stack.runtime.egress or not stack.runtime.egress[ip].is_open
    await stack.manager.settled()
    assert stack.row(sid) is None
    assert stack.manager.route(sid) is None
    assert stack.runtime.sandboxes == {} and ip not in stack.runtime.egress
    assert sid not in stack.manager.lifecycle._locks
    assert (await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())).status_code == 404
    again = await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
    assert again.status_code == 404 and again.json()["code"] == 404


def _fail_runtime_create(stack: Stack) -> None:
    stack.runtime.fail_next["create"] = SandboxRuntimeError("runc create failed: no space for the rootfs")


def _fail_envd_health(stack: Stack) -> None:
    stack.envd.unhealthy.add("*")


def _failpoint(stack: Stack) -> None:
    stack.settings.failpoints = "create-after-runtime"


def _fail_set_egress(stack: Stack) -> None:
    stack.runtime.fail_next["set_egress"] = SandboxRuntimeError("nft: transaction failed")


@pytest.mark.parametrize("inject", [_fail_runtime_create, _fail_envd_health, _failpoint, _fail_set_egress],
                         ids=["runtime-create", "envd-health", "failpoint-after-runtime", "egress"])
async def test_a_failed_create_leaves_nothing_behind(stack: Stack, inject) -> None:
    keep = (await stack.create())["sandboxID"]   # a neighbour that must not be touched
    inject(stack)
    response = await stack.client.post("/sandboxes", json={"templateID": "base"}, headers=stack.headers())
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == 500
    assert body["message"].startswith("Failed to create sandbox")
    assert [r.id for r in stack.rows()] == [keep]
    assert list(stack.runtime.sandboxes) == [keep]
    assert [sid for sid, _ in stack.manager.lifecycle.routed()] == [keep]
    assert set(stack.manager.lifecycle._locks) <= {keep}
    # the failure is not sticky: the next create works and the quota slot was given back
    stack.envd.unhealthy.clear()
    stack.settings.failpoints = ""
    await stack.create()


async def test_over_quota_is_429_without_retry_and_starts_nothing(stack: Stack) -> None:
    stack.settings.quota_concurrent_sandboxes = 2
    first = (await stack.create())["sandboxID"]
    await stack.create()
    response = await stack.client.post("/sandboxes", json={"templateID": "base"}, headers=stack.headers())
    assert response.status_code == 429
    assert response.headers["should-retry"] == "false"
    assert response.json()["code"] == 429 and "maximum number of concurrent" in response.json()["message"]
    assert len(stack.rows()) == 2 and len(stack.runtime.sandboxes) == 2
    # another team has its own quota
    await stack.create(other=True)
    # a paused sandbox gives its slot back (E2B counts running sandboxes only)
    assert (await stack.client.post(f"/sandboxes/{first}/pause", headers=stack.headers())).status_code == 204
    await stack.create()
    # ... and resuming it needs one again
    response = await stack.client.post(f"/sandboxes/{first}/resume", json={}, headers=stack.headers())
    assert response.status_code == 429 and response.headers["should-retry"] == "false"
    assert stack.row(first).state == PAUSED  # type: ignore[union-attr]


async def test_a_kill_whose_teardown_fails_stays_killing_until_the_reaper_finishes_it(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    stack.runtime.fail_next["kill"] = SandboxRuntimeError("runc kill failed: device or resource busy")
    response = await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
    assert response.status_code == 204   # answered once unrouted and stopped; the teardown failed after
    await stack.manager.settled()
    assert stack.manager.route(sid) is None
    assert stack.row(sid).state == KILLING  # type: ignore[union-attr]
    assert stack.runtime.sandboxes[sid].state == "dead"
    assert (await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())).status_code == 404
    await stack.manager.settle_interrupted()   # the reaper's next tick
    assert stack.row(sid) is None and sid not in stack.runtime.sandboxes


async def test_a_kill_that_fails_to_stop_the_sandbox_tears_it_down_before_answering(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    stack.runtime.fail_next["stop"] = SandboxRuntimeError("cannot signal the init")
    stack.runtime.fail_next["kill"] = SandboxRuntimeError("runc kill failed: device or resource busy")
    response = await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
    assert response.status_code == 500 and set(response.json()) == {"code", "message"}
    assert stack.manager.route(sid) is None
    assert stack.row(sid).state == KILLING  # type: ignore[union-attr]


async def test_a_kill_that_failed_half_way_is_finished_by_the_next_start(stack: Stack) -> None:
    stack.settings.quota_concurrent_sandboxes = 1
    sid = (await stack.create())["sandboxID"]
    stack.runtime.fail_next["kill"] = SandboxRuntimeError("runc kill failed: device or resource busy")
    assert (await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())).status_code == 204
    await stack.manager.settled()   # its background teardown failed: the row stays killing
    assert stack.row(sid).state == KILLING  # type: ignore[union-attr]
    restarted = stack.new_manager()
    await restarted.recover()
    await restarted.close()
    assert sid not in stack.runtime.sandboxes   # the container goes, as an orphan ...
    assert stack.row(sid) is None               # ... and the row left in killing goes too
    await stack.create()                        # so its quota slot is free again
