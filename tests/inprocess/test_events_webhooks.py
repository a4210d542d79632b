"""Lifecycle events (``/events/sandboxes``) and webhooks (``/events/webhooks``) over the in-process
stack: what each transition records, paging and filters, per-team isolation, retention, restart,
webhook CRUD, signed deliveries, retries, a bounded queue and a receiver that never blocks a
lifecycle operation. Deliveries go to a loopback receiver the operator setting allow-lists."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from sandlot.orchestrator.lifecycle_events import LifecycleEvents
from sandlot.store import events as event_store
from sandlot.store.models import Webhook
from tests.inprocess.conftest import Stack, StoreTemplate, start_stack, stop_stack
from tests.webhook_receiver import Receiver, e2b_signature, receiver

CREATED, PAUSED, RESUMED, KILLED = (f"sandbox.lifecycle.{t}" for t in ("created", "paused", "resumed", "killed"))


@pytest.fixture
async def hooked(tmp_path: Path, store_template: StoreTemplate) -> AsyncIterator[Stack]:
    """A stack whose operator allow-lists loopback receivers, with instant retries."""
    s = await start_stack(tmp_path, store_template, webhook_allow_private=["127.0.0.1/32"],
                          webhook_retry_base_s=0.0, webhook_max_attempts=3)
    try:
        yield s
    finally:
        await stop_stack(s)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def events_of(stack: Stack) -> LifecycleEvents:
    return stack.manager.lifecycle_events


async def settle(stack: Stack) -> None:
    """Every heard event stored and every delivery done (no clocks involved); a kill's
    ``killed`` event comes at the end of its background teardown, so those are awaited first."""
    await stack.manager.settled()
    await events_of(stack).flush()
    await events_of(stack).sender.drain()


async def get_events(stack: Stack, path: str = "/events/sandboxes", *, other: bool = False,
                     **params: Any) -> list[dict[str, Any]]:
    response = await stack.client.get(path, params=params, headers=stack.headers(other=other))
    assert response.status_code == 200, response.text
    return response.json()


async def add_webhook(stack: Stack, url: str, events: list[str], *, secret: str = "s3cret",
                      expect: int = 201, **extra: Any) -> dict[str, Any]:
    response = await stack.client.post("/events/webhooks", headers=stack.headers(),
                                       json={"name": "hook", "url": url, "events": events,
                                             "signatureSecret": secret, **extra})
    assert response.status_code == expect, response.text
    return response.json()


# --- events ------------------------------------------------------------------------------------------


async def test_lifecycle_events_record_each_transition(stack: Stack) -> None:
    sid = (await stack.create({"metadata": {"job": "42"}}))["sandboxID"]
    assert (await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())).status_code == 204
    assert (await stack.client.post(f"/sandboxes/{sid}/resume", json={}, headers=stack.headers())).status_code == 201
    assert (await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())).status_code == 204

    listed = await get_events(stack, f"/events/sandboxes/{sid}")
    assert [e["type"] for e in listed] == [KILLED, RESUMED, PAUSED, CREATED]   # newest first
    created, paused, resumed, killed = reversed(listed)
    for event in listed:
        assert event["version"] == "v2" and event["eventCategory"] == "lifecycle"
        assert event["sandboxId"] == sid and event["sandboxTeamId"] == stack.team_id
        assert event["sandboxTemplateId"] == stack.template.id and event["sandboxBuildId"] == stack.build.id
        assert event["eventData"]["sandbox_metadata"] == {"job": "42"}
        datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert [e["eventLabel"] for e in (created, paused, resumed, killed)] == ["create", "pause", "resume", "kill"]
    assert len({e["id"] for e in listed}) == 4
    # one execution from create to pause, another from resume to kill
    assert paused["sandboxExecutionId"] == created["sandboxExecutionId"]
    assert killed["sandboxExecutionId"] == resumed["sandboxExecutionId"] != created["sandboxExecutionId"]
    execution = paused["eventData"]["execution"]
    assert execution["vcpu_count"] == stack.build.cpu_count and execution["memory_mb"] == stack.build.memory_mb
    assert execution["execution_time"] >= 0 and execution["started_at"].endswith("Z")
    assert "execution" not in created["eventData"] and killed["eventData"]["kill_reason"] == "request"

    ascending = await get_events(stack, f"/events/sandboxes/{sid}", orderAsc="true")
    assert [e["id"] for e in ascending] == [e["id"] for e in reversed(listed)]


async def test_updates_and_checkpoints_are_events(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    assert (await stack.client.post(f"/sandboxes/{sid}/timeout", json={"timeout": 30},
                                    headers=stack.headers())).status_code == 204
    network = {"allowOut": ["1.1.1.1", "8.8.8.0/24"], "denyOut": ["0.0.0.0/0"]}
    assert (await stack.client.put(f"/sandboxes/{sid}/network", json=network,
                                   headers=stack.headers())).status_code == 204
    assert (await stack.client.post(f"/sandboxes/{sid}/snapshots", json={},
                                    headers=stack.headers())).status_code == 201
    created, timeout, egress, checkpoint = await get_events(stack, f"/events/sandboxes/{sid}", orderAsc="true")
    assert [e["type"] for e in (timeout, egress, checkpoint)] == [
        "sandbox.lifecycle.updated", "sandbox.lifecycle.updated", "sandbox.lifecycle.checkpointed"]
    row = stack.row(sid)
    assert row is not None
    assert datetime.fromisoformat(timeout["eventData"]["set_timeout"].replace("Z", "+00:00")) == row.end_at
    assert egress["eventData"]["network_egress"] == {"allowed_cidrs": ["1.1.1.1", "8.8.8.0/24"],
                                                     "denied_cidrs": ["0.0.0.0/0"], "allowed_domains": []}
    assert [e["eventLabel"] for e in (timeout, checkpoint)] == ["update", "checkpoint"]
    assert {e["sandboxExecutionId"] for e in (created, timeout, egress, checkpoint)} == {created["sandboxExecutionId"]}


async def test_paging_filters_and_teams(stack: Stack) -> None:
    ids = [(await stack.create())["sandboxID"] for _ in range(3)]
    for sid in ids:
        await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
    mine = await get_events(stack, limit=100)
    assert len(mine) == 6
    assert [e["type"] for e in await get_events(stack, types=KILLED, limit=100)] == [KILLED] * 3
    both = await get_events(stack, limit=100, types=[KILLED, CREATED])
    assert len(both) == 6
    first, second = await get_events(stack, limit=4), await get_events(stack, limit=4, offset=4)
    assert len(first) == 4 and len(second) == 2 and not {e["id"] for e in first} & {e["id"] for e in second}
    assert len(await get_events(stack)) == 6   # default limit 10
    # another team sees none of them, neither listed nor by sandbox id
    assert await get_events(stack, other=True) == []
    assert await get_events(stack, f"/events/sandboxes/{ids[0]}", other=True) == []
    assert await get_events(stack, "/events/sandboxes/unknown") == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"},
                                    {"types": "sandbox.lifecycle.exploded"}, {"orderAsc": "maybe"}])
async def test_bad_queries_are_e2b_shaped_400s(stack: Stack, params: dict[str, Any]) -> None:
    response = await stack.client.get("/events/sandboxes", params=params, headers=stack.headers())
    assert response.status_code == 400
    assert response.json()["code"] == 400 and response.json()["message"]
    assert (await stack.client.get("/events/sandboxes")).status_code == 401


async def test_kill_reasons_timeout_and_death(stack: Stack) -> None:
    timed_out = (await stack.create())["sandboxID"]
    stack.update(timed_out, end_at=datetime.now(timezone.utc) - timedelta(seconds=5))
    await stack.manager.expire_due()
    died = (await stack.create())["sandboxID"]
    await stack.runtime.kill(died)   # the container dies on its own
    await stack.manager.bury_dead()
    reasons = {e["sandboxId"]: e["eventData"]["kill_reason"] for e in await get_events(stack, types=KILLED)}
    assert reasons == {timed_out: "timeout", died: "unknown"}


async def test_a_sandbox_lost_across_a_restart_is_killed_orphaned(stack: Stack) -> None:
    """Recovery drops the row inside its own store transaction: the event must still be stored
    (the listener never writes in the caller's transaction, so nothing waits on a lock)."""
    lost = (await stack.create())["sandboxID"]
    await events_of(stack).flush()
    await stack.runtime.kill(lost)   # the host rebooted, say
    await events_of(stack).close()
    manager = stack.new_manager()
    try:
        await manager.recover()
        listed = await manager.lifecycle_events.page(stack.team_id, sandbox_id=lost, offset=0, limit=10,
                                                     order_asc=False, types=[])
    finally:
        await manager.close()
    assert [e["type"] for e in listed] == [KILLED, CREATED]
    assert listed[0]["eventData"]["kill_reason"] == "orphaned"
    assert listed[0]["sandboxExecutionId"] == listed[1]["sandboxExecutionId"]   # from the store, after a restart


async def test_events_survive_a_restart_and_are_bounded(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template, events_max_per_team=3)
    try:
        ids = [(await stack.create())["sandboxID"] for _ in range(2)]
        await stack.client.delete(f"/sandboxes/{ids[0]}", headers=stack.headers())
        await stack.client.delete(f"/sandboxes/{ids[1]}", headers=stack.headers())
        kept = await get_events(stack, orderAsc="true")
        assert [(e["sandboxId"], e["type"]) for e in kept] == [(ids[1], CREATED), (ids[0], KILLED), (ids[1], KILLED)]
        # an event older than the retention goes at the next write
        with stack.db.session() as session, session.begin():
            old = dict(kept[0], id="00000000-0000-4000-8000-000000000000")
            event_store.add(session, stack.other_team_id, "old", old, datetime.now(timezone.utc) - timedelta(days=8))
        await stack.create()
        await events_of(stack).flush()
        with stack.db.session() as session:
            assert event_store.page(session, stack.other_team_id, sandbox_id=None, offset=0, limit=10,
                                    order_asc=False, types=[]) == []
        # a restarted server (a new manager over the same store) serves what was stored
        await stack.manager.lifecycle_events.close()
        again = stack.new_manager()
        try:
            listed = await again.lifecycle_events.page(stack.team_id, sandbox_id=None, offset=0, limit=10,
                                                       order_asc=True, types=[])
            assert [e["id"] for e in listed][:2] == [e["id"] for e in kept[1:]]
        finally:
            await again.lifecycle_events.close()
    finally:
        await stop_stack(stack)


# --- webhook CRUD --------------------------------------------------------------------------------------


async def test_webhook_crud(stack: Stack) -> None:
    hook = await add_webhook(stack, "https://hooks.example.com/e2b", [CREATED, KILLED, CREATED])
    assert set(hook) == {"id", "teamId", "name", "createdAt", "url", "enabled", "events"}   # never the secret
    assert hook["teamId"] == stack.team_id and hook["enabled"] is True and hook["events"] == [CREATED, KILLED]
    url = f"/events/webhooks/{hook['id']}"
    assert (await stack.client.get(url, headers=stack.headers())).json() == hook
    with stack.db.session() as session:   # sealed at rest with the data dir's key, bound to the row
        stored = session.get(Webhook, hook["id"])
        assert stored is not None and "s3cret" not in stored.secret
        key = events_of(stack).secret_key
        assert event_store.open_secret(key, hook["id"], stored.secret) == "s3cret"
        with pytest.raises(InvalidTag):
            event_store.open_secret(key, str(uuid.uuid4()), stored.secret)
    assert (await stack.client.get("/events/webhooks", headers=stack.headers())).json() == [hook]

    patched = await stack.client.patch(url, json={"enabled": False, "events": [PAUSED], "signatureSecret": "new"},
                                       headers=stack.headers())
    assert patched.status_code == 200
    assert patched.json() == {**hook, "enabled": False, "events": [PAUSED]}

    # another team: not listed, not readable, not changeable, not deletable
    assert (await stack.client.get("/events/webhooks", headers=stack.headers(other=True))).json() == []
    for method in ("GET", "PATCH", "DELETE"):
        response = await stack.client.request(method, url, headers=stack.headers(other=True),
                                              json={"name": "x"} if method == "PATCH" else None)
        assert response.status_code == 404 and response.json()["code"] == 404

    deleted = await stack.client.delete(url, headers=stack.headers())
    assert deleted.status_code == 200 and deleted.content == b""
    assert (await stack.client.get(url, headers=stack.headers())).status_code == 404
    assert (await stack.client.get("/events/webhooks/not-a-uuid", headers=stack.headers())).status_code == 400


@pytest.mark.parametrize("body", [
    {"url": "https://x.example/", "events": [CREATED], "signatureSecret": "s"},              # no name
    {"name": "n", "events": [CREATED], "signatureSecret": "s"},                                # no url
    {"name": "n", "url": "https://x.example/", "signatureSecret": "s"},                        # no events
    {"name": "n", "url": "https://x.example/", "events": [CREATED]},                           # no secret
    {"name": "n", "url": "https://x.example/", "events": [], "signatureSecret": "s"},
    {"name": "n", "url": "https://x.example/", "events": ["sandbox.lifecycle.nope"], "signatureSecret": "s"},
    {"name": "n", "url": "ftp://x.example/", "events": [CREATED], "signatureSecret": "s"},
    {"name": "n", "url": "https://user:pw@x.example/", "events": [CREATED], "signatureSecret": "s"},
    {"name": "n", "url": "not a url", "events": [CREATED], "signatureSecret": "s"},
    {"name": "n", "url": "https://x.example/", "events": [CREATED], "signatureSecret": "s", "enabled": "yes"},
])
async def test_bad_webhooks_are_400s_and_store_nothing(stack: Stack, body: dict[str, Any]) -> None:
    response = await stack.client.post("/events/webhooks", json=body, headers=stack.headers())
    assert response.status_code == 400 and response.json()["code"] == 400, response.text
    assert (await stack.client.get("/events/webhooks", headers=stack.headers())).json() == []


async def test_webhook_count_is_capped(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template, webhooks_per_team=2)
    try:
        for _ in range(2):
            await add_webhook(stack, "https://hooks.example.com/", [CREATED])
        refused = await add_webhook(stack, "https://hooks.example.com/", [CREATED], expect=400)
        assert "at most 2" in refused["message"]
    finally:
        await stop_stack(stack)


# --- deliveries ----------------------------------------------------------------------------------------


async def test_signed_delivery_of_subscribed_events(hooked: Stack, rx: Receiver) -> None:
    hook = await add_webhook(hooked, rx.url, [KILLED], secret="topsecret")
    disabled = await add_webhook(hooked, rx.url, [CREATED, KILLED], enabled=False)
    sid = (await hooked.create())["sandboxID"]
    await hooked.client.delete(f"/sandboxes/{sid}", headers=hooked.headers())
    await settle(hooked)

    assert len(rx.requests) == 1   # only the subscribed type, nothing for the disabled webhook
    got = rx.requests[0]
    assert got.method == "POST" and got.path == "/hook?x=1"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["e2b-webhook-id"] == hook["id"] != disabled["id"]
    assert got.headers["e2b-signature-version"] == "v1"
    assert got.headers["e2b-signature"] == e2b_signature("topsecret", got.body)
    assert got.headers["host"] == f"127.0.0.1:{rx.port}"
    killed = (await get_events(hooked, types=KILLED))[0]
    assert json.loads(got.body) == killed   # the body is the events API's object

    deliveries = (await hooked.client.get(f"/events/webhooks/{hook['id']}/deliveries", headers=hooked.headers())).json()
    assert deliveries["data"][0]["eventId"] == killed["id"] and deliveries["data"][0]["eventType"] == KILLED
    assert deliveries["data"][0]["attempts"][0]["status"] == "success"
    assert deliveries["data"][0]["attempts"][0]["responseHttpStatusCode"] == 200


async def test_failed_deliveries_are_retried_then_given_up(hooked: Stack, rx: Receiver) -> None:
    rx.statuses = [500, 503]   # two failures, then 200
    hook = await add_webhook(hooked, rx.url, [CREATED])
    await hooked.create()
    await settle(hooked)
    assert len(rx.requests) == 3
    assert len({r.body for r in rx.requests}) == 1                           # the same event each time
    assert len({r.headers["e2b-delivery-id"] for r in rx.requests}) == 3     # a new id per attempt
    attempts = (await hooked.client.get(f"/events/webhooks/{hook['id']}/deliveries",
                                        headers=hooked.headers())).json()["data"][0]["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "success"]
    assert attempts[0]["errorClass"] == "http_error"

    rx.requests.clear()
    rx.statuses = [500] * 10   # never succeeds: stops at the max attempt count (3 here)
    await hooked.create()
    await settle(hooked)
    assert len(rx.requests) == 3


async def test_slow_receiver_never_blocks_lifecycle_and_queue_is_bounded(
        tmp_path: Path, store_template: StoreTemplate, rx: Receiver) -> None:
    stack = await start_stack(tmp_path, store_template, webhook_allow_private=["127.0.0.1/32"],
                              webhook_queue_size=2, webhook_retry_base_s=0.0)
    rx.hold = threading.Event()
    try:
        await add_webhook(stack, rx.url, [CREATED, KILLED])
        ids = [(await stack.create())["sandboxID"] for _ in range(3)]
        await events_of(stack).flush()
        await asyncio.to_thread(rx.wait_for, 1)   # the receiver now holds a delivery open …
        for sid in ids:                              # … and kills still answer at once
            response = await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
            assert response.status_code == 204
        await stack.manager.settled()
        assert stack.rows() == []
        await events_of(stack).flush()
        sender = events_of(stack).sender
        assert sender.pending <= 2 and sender.dropped == 6 - 2   # 6 events, room for 2
        rx.hold.set()
        await sender.drain()
        assert len(rx.requests) == 2
        assert len(await get_events(stack, limit=100)) == 6   # events are stored whatever webhooks do
    finally:
        rx.hold.set()
        await stop_stack(stack)
