"""What the E2B SDK sees of pause/resume details (issue 15): ``requireHealthyGuest``, a memory
pause of a hung guest agent (``envdUnresponsiveAtPause``) and the resume it then needs
(``memory: false``, the SDK's ``on_resume="reboot"``), ``network`` in ``get_info``, fork counts."""

from __future__ import annotations

from sandlot.orchestrator.lifecycle import PAUSED, RUNNING
from tests.inprocess.conftest import Stack

GUEST_UNRESPONSIVE = "sandbox_snapshot_guest_agent_unresponsive"


async def _pause(stack: Stack, sid: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    response = await stack.client.post(f"/sandboxes/{sid}/pause", json=body or {}, headers=stack.headers())
    return response.status_code, (response.json() if response.content else {})


async def _detail(stack: Stack, sid: str) -> dict[str, object]:
    response = await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_strict_pause_of_a_hung_guest_is_503_and_the_sandbox_keeps_running(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    stack.envd.unhealthy.add(ip)
    status, body = await _pause(stack, sid, {"requireHealthyGuest": True})
    assert status == 503 and body["code"] == 503   # the SDK's ServiceBusyException
    assert "not responding" in str(body["message"]) and "keeps running" in str(body["message"])
    row = stack.row(sid)
    assert row is not None and row.state == RUNNING and not row.envd_unresponsive_at_pause
    assert stack.manager.route(sid) is not None and stack.runtime.sandboxes[sid].state == "running"
    assert not any(call[0] == "pause" for call in stack.runtime.calls)
    # the legitimate path: once envd answers, the same strict pause works
    stack.envd.unhealthy.discard(ip)
    assert (await _pause(stack, sid, {"requireHealthyGuest": True}))[0] == 204
    assert stack.row(sid).state == PAUSED  # type: ignore[union-attr]
    assert "envdUnresponsiveAtPause" not in await _detail(stack, sid)


async def test_a_filesystem_pause_always_needs_an_answering_guest(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    stack.envd.unhealthy.add(ip)
    status, body = await _pause(stack, sid, {"memory": False})
    assert status == 503 and "filesystem-only" in str(body["message"])
    assert stack.row(sid).state == RUNNING  # type: ignore[union-attr]
    stack.envd.unhealthy.discard(ip)
    assert (await _pause(stack, sid, {"memory": False}))[0] == 204
    assert stack.runtime.sandboxes[sid].paused_memory is False


async def test_a_memory_pause_of_a_hung_guest_is_marked_and_resumes_only_by_reboot(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    sid = (await stack.create({"envVars": {"A": "1"}}))["sandboxID"]
    row = stack.row(sid)
    assert row is not None and row.ip is not None
    stack.envd.unhealthy.add(row.ip)
    assert (await _pause(stack, sid))[0] == 204
    paused = stack.row(sid)
    assert paused is not None and paused.state == PAUSED and paused.envd_unresponsive_at_pause is True
    assert stack.runtime.sandboxes[sid].paused_memory is True
    assert (await _detail(stack, sid))["envdUnresponsiveAtPause"] is True
    listed = (await stack.client.get("/v2/sandboxes?state=paused", headers=stack.headers())).json()
    assert [item.get("envdUnresponsiveAtPause") for item in listed if item["sandboxID"] == sid] == [True]

    # a plain resume (connect, or /resume) would restore the hung agent: 409 + E2B's error_code
    for path, body in ((f"/v2/sandboxes/{sid}/connect", {}), (f"/sandboxes/{sid}/resume", {"timeout": 60})):
        response = await stack.client.post(path, json=body, headers=stack.headers())
        assert response.status_code == 409, response.text
        assert response.json()["error_code"] == GUEST_UNRESPONSIVE and response.json()["code"] == 409
        assert "memory: false" in response.json()["message"]
    assert stack.row(sid).state == PAUSED  # type: ignore[union-attr]   # nothing touched, no quota taken
    assert not any(call[0] == "resume" for call in stack.runtime.calls)

    # on_resume="reboot": a cold boot from disk, envd re-identified (token and env vars again)
    stack.envd.unhealthy.discard(row.ip)   # a fresh envd answers
    response = await stack.client.post(f"/v2/sandboxes/{sid}/connect", json={"memory": False, "timeout": 60},
                                       headers=stack.headers())
    assert response.status_code == 201, response.text
    assert response.json()["envdAccessToken"] == row.envd_access_token
    resumed = stack.row(sid)
    assert resumed is not None and resumed.state == RUNNING and resumed.envd_unresponsive_at_pause is False
    inits = stack.envd.inits_at(row.ip)
    assert inits and inits[-1].body["envVars"]["A"] == "1"
    assert ("finish_resume", sid) in stack.runtime.calls   # the memory image is dropped
    assert stack.runtime.sandboxes[sid].paused_memory is None
    assert "envdUnresponsiveAtPause" not in await _detail(stack, sid)


async def test_reboot_resume_of_a_healthy_memory_pause_cold_boots(stack: Stack) -> None:
    sid = (await stack.create({"envVars": {"B": "2"}}))["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    assert (await _pause(stack, sid))[0] == 204
    assert stack.row(sid).envd_unresponsive_at_pause is False  # type: ignore[union-attr]
    before = len(stack.envd.inits_at(ip))
    response = await stack.client.post(f"/sandboxes/{sid}/resume", json={"memory": False}, headers=stack.headers())
    assert response.status_code == 201, response.text
    assert len(stack.envd.inits_at(ip)) == before + 1   # rebooted: envd told who it is again
    # a plain memory resume keeps envd as it was: no /init
    assert (await _pause(stack, sid))[0] == 204
    assert (await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())).status_code == 201
    assert len(stack.envd.inits_at(ip)) == before + 1


async def test_a_reboot_resume_that_fails_leaves_the_memory_image(stack: Stack) -> None:
    stack.settings.hot_pause_s = 0   # a CRIU pause (hot pauses: test_hot_pause.py)
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    stack.envd.unhealthy.add(ip)
    assert (await _pause(stack, sid))[0] == 204
    # the cold-booted envd does not come up either: it stays paused, image and mark kept
    response = await stack.client.post(f"/v2/sandboxes/{sid}/connect", json={"memory": False}, headers=stack.headers())
    assert response.status_code == 500 and "stays paused" in response.json()["message"]
    row = stack.row(sid)
    assert row is not None and row.state == PAUSED and row.envd_unresponsive_at_pause is True
    assert stack.runtime.sandboxes[sid].paused_memory is True


async def test_connect_memory_must_be_a_boolean(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    response = await stack.client.post(f"/v2/sandboxes/{sid}/connect", json={"memory": "no"}, headers=stack.headers())
    assert response.status_code == 400 and response.json()["code"] == 400
    response = await stack.client.post(f"/sandboxes/{sid}/pause", json={"requireHealthyGuest": "yes"},
                                       headers=stack.headers())
    assert response.status_code == 400
    assert stack.row(sid).state == RUNNING  # type: ignore[union-attr]


async def test_the_reaper_auto_pauses_a_hung_guest_filesystem_only_rather_than_kill_it(stack: Stack) -> None:
    sid = (await stack.create({"autoPause": True, "autoPauseMemory": False}))["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    stack.envd.unhealthy.add(ip)
    await stack.manager.pausing.pause(sid, on_timeout=True)
    row = stack.row(sid)
    assert row is not None and row.state == PAUSED and row.envd_unresponsive_at_pause is False
    assert stack.runtime.sandboxes[sid].paused_memory is False


async def test_get_info_reports_the_network_configuration(stack: Stack) -> None:
    sid = (await stack.create({"network": {"allowOut": ["1.1.1.1"], "denyOut": ["0.0.0.0/0"],
                                           "allowPublicTraffic": False}}))["sandboxID"]
    network = (await _detail(stack, sid))["network"]
    assert network == {"allowOut": ["1.1.1.1"], "denyOut": ["0.0.0.0/0"], "allowPublicTraffic": False}
    closed = (await stack.create({"allow_internet_access": False}))["sandboxID"]
    assert (await _detail(stack, closed))["network"] == {"denyOut": ["0.0.0.0/0"]}
    plain = (await stack.create())["sandboxID"]
    assert (await _detail(stack, plain))["network"] == {}


async def test_fork_counts_up_to_100_and_the_quota_still_holds(stack: Stack) -> None:
    source = (await stack.create())["sandboxID"]
    over = await stack.client.post(f"/sandboxes/{source}/fork", json={"count": 101}, headers=stack.headers())
    assert over.status_code == 400 and "between 1 and 100" in over.json()["message"]
    stack.settings.quota_concurrent_sandboxes = 5
    response = await stack.client.post(f"/sandboxes/{source}/fork", json={"count": 25}, headers=stack.headers())
    assert response.status_code == 201, response.text
    items = response.json()
    assert len(items) == 25
    started = [item["sandbox"]["sandboxID"] for item in items if "sandbox" in item]
    assert len(started) == 4   # the source holds the fifth slot
    refused = [item["error"] for item in items if "error" in item]
    assert len(refused) == 21 and {e["code"] for e in refused} == {429}
    assert sum(1 for r in stack.rows() if r.state == RUNNING) == 5
