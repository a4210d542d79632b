"""A webhook URL is tenant-shaped: the delivery sender must never be a way into the host's own
networks (loopback services, the sandbox subnet, link-local/metadata, private ranges) unless
the operator allow-lists them (``SANDLOT_WEBHOOK_ALLOW_PRIVATE``).

Each attack aims at a canary HTTP server on loopback and checks it received nothing; the
legitimate delivery next to it (an allow-listed receiver) still arrives, signed. Attacks:
forbidden literals at registration; names and encodings that only resolve to loopback at
delivery (``localhost``, decimal ``2130706433``, ``0x7f.1`` — as if DNS changed after
registration); a redirect from an allowed receiver into loopback; DNS rebinding between the
check and the connection; and the same over the real server with the unmodified API.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandlot.orchestrator.webhooks import Delivery, WebhookSender
from sandlot.store import events as event_store
from sandlot.store.models import Webhook
from tests.e2e.server import Server
from tests.inprocess.conftest import Stack, StoreTemplate, make_settings, start_stack, stop_stack
from tests.inprocess.conftest import store_template  # noqa: F401 (fixture)
from tests.webhook_receiver import Receiver, e2b_signature, receiver

CREATED = "sandbox.lifecycle.created"
KILLED = "sandbox.lifecycle.killed"


@pytest.fixture
def canary() -> Iterator[Receiver]:
    """The host-only service a tenant would love its webhook to reach."""
    with receiver("127.0.0.2") as r:
        yield r


@pytest.fixture
def legit() -> Iterator[Receiver]:
    with receiver("127.0.0.1") as r:
        yield r


@pytest.fixture
async def stack(tmp_path: Path, store_template: StoreTemplate) -> AsyncIterator[Stack]:  # noqa: F811
    """The operator allow-lists exactly one loopback address (the legitimate receiver's)."""
    s = await start_stack(tmp_path, store_template, webhook_allow_private=["127.0.0.1/32"],
                          webhook_retry_base_s=0.0, webhook_max_attempts=2)
    try:
        yield s
    finally:
        await stop_stack(s)


async def settle(stack: Stack) -> None:
    await stack.manager.lifecycle_events.flush()
    await stack.manager.lifecycle_events.sender.drain()


def localhost_urls(port: int) -> list[str]:
    """``localhost`` is 127.0.0.1: refused unless the operator allow-lists that address."""
    return [f"http://localhost:{port}/", f"http://LOCALHOST.:{port}/", f"http://api.localhost:{port}/"]


def forbidden_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.2:{port}/", f"http://127.9.9.9:{port}/", f"http://[::1]:{port}/",
        f"http://0.0.0.0:{port}/", f"http://[::ffff:127.0.0.2]:{port}/", f"http://[::]:{port}/",
        "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://168.63.129.16/",  # metadata
        "http://10.213.0.5:49983/", "http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/",
        "http://[fd00::1]/", "http://224.0.0.1/", "http://240.0.0.1/",
    ]


async def test_forbidden_literals_are_refused_at_registration(stack: Stack, canary: Receiver,
                                                              legit: Receiver) -> None:
    for url in forbidden_urls(canary.port):
        response = await stack.client.post("/events/webhooks", headers=stack.headers(), json={
            "name": "evil", "url": url, "events": [CREATED], "signatureSecret": "x"})
        assert response.status_code == 400, url
        assert response.json()["code"] == 400 and "public addresses" in response.json()["message"], url
    assert (await stack.client.get("/events/webhooks", headers=stack.headers())).json() == []
    # the legitimate, allow-listed receiver registers and gets its signed delivery
    hook = (await stack.client.post("/events/webhooks", headers=stack.headers(), json={
        "name": "ok", "url": legit.url, "events": [CREATED], "signatureSecret": "k"})).json()
    await stack.create()
    await settle(stack)
    assert len(legit.requests) == 1 and legit.requests[0].headers["e2b-webhook-id"] == hook["id"]
    assert legit.requests[0].headers["e2b-signature"] == e2b_signature("k", legit.requests[0].body)
    assert canary.requests == []


async def test_names_resolving_into_loopback_are_refused_at_delivery(tmp_path: Path,
                                                                      store_template: StoreTemplate,  # noqa: F811
                                                                      canary: Receiver) -> None:
    """What a name resolves to can change after registration: rows written as if it had. No
    allow-list on this server: loopback in any spelling is refused."""
    port = canary.port
    sneaky = [f"http://localhost:{port}/", f"http://2130706434:{port}/", f"http://0x7f.2:{port}/",
              f"http://127.2:{port}/", f"http://127.0.0.2:{port}/", f"http://[::ffff:7f00:2]:{port}/"]
    s = await start_stack(tmp_path, store_template, webhook_retry_base_s=0.0)
    try:
        with s.db.session() as session, session.begin():
            for url in sneaky:
                hook_id = str(uuid.uuid4())
                secret = event_store.seal_secret(s.manager.lifecycle_events.secret_key, hook_id, "s")
                session.add(Webhook(id=hook_id, team_id=s.team_id, name="n", url=url, events=[CREATED],
                                    secret=secret, enabled=True))
        await s.create()
        await settle(s)
        outcomes = list(s.manager.lifecycle_events.sender.outcomes)
    finally:
        await stop_stack(s)
    assert canary.requests == []
    assert len(outcomes) == len(sneaky)   # each tried once: a refused target is not retried
    assert all(not o.ok and o.error_class == "request_error" for o in outcomes), outcomes


async def test_redirects_are_not_followed(stack: Stack, canary: Receiver, legit: Receiver) -> None:
    legit.redirect_to = f"http://127.0.0.2:{canary.port}/"
    await stack.client.post("/events/webhooks", headers=stack.headers(), json={
        "name": "r", "url": legit.url, "events": [CREATED], "signatureSecret": "x"})
    await stack.create()
    await settle(stack)
    assert canary.requests == []
    assert len(legit.requests) == 2   # a 3xx is a failed attempt (retried up to the max), never followed
    assert all(o.status == 302 and o.error_class == "http_error" for o in stack.manager.lifecycle_events.sender.outcomes)


async def test_dns_is_resolved_once_and_the_checked_address_is_dialled(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """DNS rebinding: the first answer is public, every later one is loopback. The sender must
    connect to the address it checked (the name only in ``Host``/SNI), never resolve again."""
    answers: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.rebind.test":
            address = "93.184.216.34" if not answers else "127.0.0.2"
            answers.append(address)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    dialled: list[httpx.Request] = []

    def transport(request: httpx.Request) -> httpx.Response:   # records instead of leaving the host
        dialled.append(request)
        return httpx.Response(204)

    settings = make_settings(tmp_path)
    sender = WebhookSender(settings, client=httpx.AsyncClient(transport=httpx.MockTransport(transport)))
    try:
        sender.submit(Delivery("w", "e", CREATED, "sbx", "https://hooks.rebind.test:8443/in", "s", b"{}"))
        await sender.drain()
    finally:
        await sender.close()
    assert answers == ["93.184.216.34"]   # resolved once
    assert len(dialled) == 1
    assert dialled[0].url.host == "93.184.216.34" and dialled[0].url.port == 8443
    assert dialled[0].headers["host"] == "hooks.rebind.test:8443"
    assert dialled[0].extensions["sni_hostname"] == "hooks.rebind.test"


async def test_a_receiver_that_never_answers_holds_no_worker(tmp_path: Path,
                                                            store_template: StoreTemplate,  # noqa: F811
                                                            legit: Receiver) -> None:
    """A tenant's receiver that accepts and never answers costs one attempt's time limit; the
    sandbox operations around it answer at once and later deliveries still go out."""
    legit.hold = threading.Event()
    s = await start_stack(tmp_path, store_template, webhook_allow_private=["127.0.0.1/32"],
                          webhook_timeout_s=0.5, webhook_max_attempts=1)
    try:
        await s.client.post("/events/webhooks", headers=s.headers(), json={
            "name": "slow", "url": legit.url, "events": [CREATED], "signatureSecret": "x"})
        for _ in range(3):   # two workers: a third delivery waits behind the held ones
            sid = (await s.create())["sandboxID"]
            assert (await s.client.delete(f"/sandboxes/{sid}", headers=s.headers())).status_code == 204
        await settle(s)
        outcomes = list(s.manager.lifecycle_events.sender.outcomes)
    finally:
        legit.hold.set()
        await stop_stack(s)
    assert len(outcomes) == 3 and all(o.error_class == "timeout" for o in outcomes)
    assert len(legit.requests) == 3


async def test_allow_list_is_exact(tmp_path: Path, store_template: StoreTemplate,  # noqa: F811
                                   canary: Receiver) -> None:
    """Allow-listing one loopback address opens that one only."""
    s = await start_stack(tmp_path, store_template, webhook_allow_private=["127.0.0.1/32"])
    try:
        response = await s.client.post("/events/webhooks", headers=s.headers(), json={
            "name": "n", "url": canary.url, "events": [CREATED], "signatureSecret": "x"})
        assert response.status_code == 400
    finally:
        await stop_stack(s)
    assert canary.requests == []


# --- the real server (no allow-list), the unmodified HTTP API ------------------------------------------


def test_real_server_never_delivers_into_loopback(server: Server) -> None:
    from e2b import Sandbox

    headers = {"X-API-Key": server.api_key}
    with receiver("127.0.0.1") as canary, httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
        for url in localhost_urls(canary.port) + forbidden_urls(canary.port):
            refused = api.post("/events/webhooks", json={"name": "e", "url": url, "events": [CREATED],
                                                          "signatureSecret": "x"})
            assert refused.status_code == 400, url
        hook = api.post("/events/webhooks", json={"name": "e", "url": f"http://2130706433:{canary.port}/",
                                                  "events": [CREATED, KILLED], "signatureSecret": "x"})
        assert hook.status_code == 201   # a name: checked at each delivery
        hook_id = hook.json()["id"]
        try:
            sbx = Sandbox.create(timeout=60)
            sbx.kill()
            deadline = time.monotonic() + 60
            data: list[dict[str, Any]] = []
            while time.monotonic() < deadline and len(data) < 2:
                data = api.get(f"/events/webhooks/{hook_id}/deliveries").json()["data"]
                time.sleep(0.2)
            assert {d["eventType"] for d in data} == {CREATED, KILLED}
            assert all(d["sandboxId"] == sbx.sandbox_id for d in data)
            for delivery in data:
                assert [a["status"] for a in delivery["attempts"]] == ["failed"]   # refused, not retried
                assert delivery["attempts"][0]["errorClass"] == "request_error"
            assert canary.requests == []
            # the events themselves are recorded whatever the webhook does
            types = [e["type"] for e in api.get(f"/events/sandboxes/{sbx.sandbox_id}").json()]
            assert types == [KILLED, CREATED]
        finally:
            api.delete(f"/events/webhooks/{hook_id}")
