"""API behaviour above the orchestrator: listing (pages, metadata and state filters, teams) and
``Idempotency-Key`` on create."""

from __future__ import annotations

import asyncio
import urllib.parse

from tests.inprocess.conftest import Stack


async def pages(stack: Stack, **params: str) -> list[list[dict]]:
    """Every page of ``GET /v2/sandboxes`` (following ``X-Next-Token``)."""
    out: list[list[dict]] = []
    query = dict(params)
    for _ in range(50):
        response = await stack.client.get("/v2/sandboxes", params=query, headers=stack.headers())
        assert response.status_code == 200, response.text
        out.append(response.json())
        token = response.headers.get("x-next-token")
        if token is None:
            return out
        query["nextToken"] = token
    raise AssertionError("pagination did not end")


async def test_list_pages_cover_every_sandbox_once(stack: Stack) -> None:
    created = [(await stack.create({"metadata": {"n": str(i)}}))["sandboxID"] for i in range(5)]
    await stack.create(other=True)   # never listed for this team
    got = await pages(stack, limit="2")
    assert [len(p) for p in got] == [2, 2, 1]
    ids = [s["sandboxID"] for p in got for s in p]
    assert sorted(ids) == sorted(created)
    ascending = await pages(stack, limit="3", order="asc")
    assert [len(p) for p in ascending] == [3, 2]
    assert [s["sandboxID"] for p in ascending for s in p] == list(reversed(ids))
    # one page when everything fits: no token
    single = await stack.client.get("/v2/sandboxes", params={"limit": "5"}, headers=stack.headers())
    assert len(single.json()) == 5 and "x-next-token" not in single.headers
    first = single.json()[0]
    assert set(first) >= {"sandboxID", "templateID", "startedAt", "endAt", "state", "metadata", "cpuCount"}


async def test_pages_are_exact_when_sandboxes_started_at_the_same_instant(stack: Stack) -> None:
    from datetime import datetime, timezone

    created = [(await stack.create())["sandboxID"] for _ in range(5)]
    for sid in created:
        stack.update(sid, started_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    for order in ("desc", "asc"):
        ids = [s["sandboxID"] for p in await pages(stack, limit="2", order=order) for s in p]
        assert sorted(ids) == sorted(created), order


async def test_list_rejects_bad_paging_parameters(stack: Stack) -> None:
    for params in ({"limit": "0"}, {"limit": "101"}, {"nextToken": "not-a-token"}, {"order": "sideways"},
                   {"state": "dead"}):
        response = await stack.client.get("/v2/sandboxes", params=params, headers=stack.headers())
        assert response.status_code == 400 and response.json()["code"] == 400, params


async def test_metadata_and_state_filters(stack: Stack) -> None:
    a = (await stack.create({"metadata": {"group": "x", "user": "ann"}}))["sandboxID"]
    b = (await stack.create({"metadata": {"group": "x", "user": "bob"}}))["sandboxID"]
    c = (await stack.create({"metadata": {"group": "y & z", "user": "ann"}}))["sandboxID"]
    await stack.create({"metadata": {"group": "x"}}, other=True)

    async def listed(metadata: dict[str, str], **params: str) -> set[str]:
        # as the SDK sends it: keys and values quoted, then url-encoded (e2b/sandbox_async/paginator.py)
        quoted = {urllib.parse.quote(k): urllib.parse.quote(v) for k, v in metadata.items()}
        query = {"metadata": urllib.parse.urlencode(quoted), **params} if metadata else params
        response = await stack.client.get("/v2/sandboxes", params=query, headers=stack.headers())
        assert response.status_code == 200, response.text
        return {s["sandboxID"] for s in response.json()}

    assert await listed({"group": "x"}) == {a, b}
    assert await listed({"group": "x", "user": "ann"}) == {a}
    assert await listed({"group": "y & z"}) == {c}
    assert await listed({"user": "nobody"}) == set()
    assert await listed({}) == {a, b, c}
    await stack.client.post(f"/sandboxes/{b}/pause", headers=stack.headers())
    assert await listed({}, state="running") == {a, c}
    assert await listed({}, state="paused") == {b}
    assert await listed({"group": "x"}, state="paused") == {b}
    # the v1 list shows running sandboxes only, with the same filter
    v1 = await stack.client.get("/sandboxes", params={"metadata": "group=x"}, headers=stack.headers())
    assert {s["sandboxID"] for s in v1.json()} == {a}


async def test_an_idempotency_key_replays_the_first_create(stack: Stack) -> None:
    key = {"Idempotency-Key": "create-1"}
    body = {"metadata": {"k": "v"}}
    first = await stack.create(body, headers=key)
    again = await stack.create(body, headers=key)
    assert again == first
    assert len(stack.runtime.sandboxes) == 1 and len(stack.rows()) == 1
    # concurrent retries of one create also get one sandbox
    both = await asyncio.gather(*(stack.create(body, headers={"Idempotency-Key": "create-2"}) for _ in range(2)))
    assert both[0] == both[1] and both[0]["sandboxID"] != first["sandboxID"]
    assert len(stack.runtime.sandboxes) == 2
    # the same key with another body is a conflict, and creates nothing
    response = await stack.client.post("/sandboxes", json={"templateID": "base", "metadata": {"k": "other"}},
                                       headers={**stack.headers(), **key})
    assert response.status_code == 409 and response.json()["code"] == 409
    assert len(stack.runtime.sandboxes) == 2
    # keys are per team
    theirs = await stack.create(body, other=True, headers=key)
    assert theirs["sandboxID"] != first["sandboxID"] and len(stack.runtime.sandboxes) == 3


async def test_a_failed_create_is_not_remembered_by_its_idempotency_key(stack: Stack) -> None:
    key = {"Idempotency-Key": "retry-me"}
    stack.envd.unhealthy.add("*")
    failed = await stack.client.post("/sandboxes", json={"templateID": "base"}, headers={**stack.headers(), **key})
    assert failed.status_code == 500
    stack.envd.unhealthy.clear()
    ok = await stack.create(headers=key)
    assert stack.row(ok["sandboxID"]) is not None


async def test_invalid_idempotency_keys_are_400(stack: Stack) -> None:
    response = await stack.client.post("/sandboxes", json={"templateID": "base"},
                                       headers={**stack.headers(), "Idempotency-Key": "spaces are not ok"})
    assert response.status_code == 400 and stack.rows() == []


async def test_create_validation_errors_are_400_and_start_nothing(stack: Stack) -> None:
    for body in ({"templateID": "nosuchtemplate"}, {"templateID": "base", "timeout": -1},
                 {"templateID": "base", "autoResume": {"enabled": True}},
                 {"templateID": "base", "network": {"rules": {"x": 1}}}, {"templateID": 5}, {}):
        response = await stack.client.post("/sandboxes", json=body, headers=stack.headers())
        assert response.status_code in (400, 404), (body, response.text)
        assert set(response.json()) == {"code", "message"}
    assert stack.rows() == [] and stack.runtime.sandboxes == {}


async def test_set_timeout_may_shorten_and_refresh_only_extends(stack: Stack) -> None:
    sid = (await stack.create({"timeout": 600}))["sandboxID"]
    end = stack.row(sid).end_at  # type: ignore[union-attr]
    assert (await stack.client.post(f"/sandboxes/{sid}/timeout", json={"timeout": 30},
                                    headers=stack.headers())).status_code == 204
    shortened = stack.row(sid).end_at  # type: ignore[union-attr]
    assert shortened < end
    assert (await stack.client.post(f"/sandboxes/{sid}/refreshes", json={"duration": 15},
                                    headers=stack.headers())).status_code == 204
    assert stack.row(sid).end_at >= shortened  # type: ignore[union-attr]


async def test_health_says_what_is_degraded(stack: Stack) -> None:
    ok = await stack.client.get("/health")
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    stack.runtime.criu_error = "criu: not found"
    degraded = await stack.client.get("/health")
    assert degraded.json()["status"] == "degraded" and "criu: not found" in degraded.json()["problems"][0]


async def test_a_sandboxs_lifecycle_log_and_metrics_are_its_teams(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())
    logs = await stack.client.get(f"/v2/sandboxes/{sid}/logs", headers=stack.headers())
    assert logs.status_code == 200, logs.text
    assert "sandbox created" in logs.text
    metrics = await stack.client.get(f"/sandboxes/{sid}/metrics", headers=stack.headers())
    assert metrics.status_code == 200 and isinstance(metrics.json(), list)
