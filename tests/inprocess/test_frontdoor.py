"""The front door over the orchestrator's route table: a real TCP upstream bound on the sandbox's
loopback address (``127.0.77.N``) stands in for a server inside the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sandlot.orchestrator.lifecycle import PAUSED, RUNNING
from tests.inprocess.conftest import Stack


@asynccontextmanager
async def upstream(ip: str) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A one-response-per-connection HTTP server on ``ip``; yields its port and the request heads it saw."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            body = b"hello from " + ip.encode() + b" " + head.split(b" ", 2)[1]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\nX-Upstream: yes\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host=ip, port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


def to(sandbox_id: str, port: int, **extra: str) -> dict[str, str]:
    return {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port), **extra}


async def test_a_request_with_routing_headers_reaches_the_sandbox(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    async with upstream(ip) as (port, seen):
        response = await stack.client.get("/some/path?q=1", headers=to(sid, port))
        assert response.status_code == 200, response.text
        assert response.text == f"hello from {ip} /some/path?q=1"
        assert response.headers["x-upstream"] == "yes"
        # the SDK's {id}-{clientID} form routes the same
        response = await stack.client.get("/x", headers=to(f"{sid}-6532622b", port))
        assert response.status_code == 200 and response.text == f"hello from {ip} /x"
        assert len(seen) == 2
        # the sandbox sees its own address as Host, never the front door's name
        assert seen[0].lower().split(b"\r\n").count(f"host: {ip}:{port}".encode()) == 1


async def test_unknown_sandboxes_and_closed_ports_are_502_json(stack: Stack) -> None:
    response = await stack.client.get("/", headers=to("nosuchsandbox", 8080))
    assert response.status_code == 502
    assert response.json() == {"sandboxId": "nosuchsandbox", "message": "The sandbox was not found", "code": 502}
    sid = (await stack.create())["sandboxID"]
    async with upstream(stack.row(sid).ip) as (port, _):  # type: ignore[union-attr]
        pass   # closed again: nothing listens on that port now
    response = await stack.client.get("/", headers=to(sid, port))
    assert response.status_code == 502
    assert response.json()["message"] == "The sandbox is running but port is not open"
    # a killed sandbox is not found any more
    await stack.client.delete(f"/sandboxes/{sid}", headers=stack.headers())
    assert (await stack.client.get("/", headers=to(sid, port))).json()["message"] == "The sandbox was not found"


async def test_bad_routing_headers_are_400(stack: Stack) -> None:
    for headers in ({"E2b-Sandbox-Id": "abc"}, to("ABC/../x", 80), to("abc", 0), to("abc", 70000)):
        response = await stack.client.get("/", headers=headers)
        assert response.status_code == 400 and response.json()["code"] == 400


async def test_a_private_sandbox_needs_its_traffic_token(stack: Stack) -> None:
    body = await stack.create({"network": {"allowPublicTraffic": False}})
    sid, token = body["sandboxID"], body["trafficAccessToken"]
    assert token
    async with upstream(stack.row(sid).ip) as (port, seen):  # type: ignore[union-attr]
        missing = await stack.client.get("/", headers=to(sid, port))
        assert missing.status_code == 403 and missing.json()["code"] == 403
        wrong = await stack.client.get("/", headers=to(sid, port, **{"e2b-traffic-access-token": "0" * 64}))
        assert wrong.status_code == 403
        assert seen == []
        ok = await stack.client.get("/", headers=to(sid, port, **{"e2b-traffic-access-token": token}))
        assert ok.status_code == 200 and len(seen) == 1
    # another sandbox's token opens nothing
    other = await stack.create({"network": {"allowPublicTraffic": False}})
    async with upstream(stack.row(other["sandboxID"]).ip) as (port, seen):  # type: ignore[union-attr]
        response = await stack.client.get("/", headers=to(other["sandboxID"], port, **{"e2b-traffic-access-token": token}))
        assert response.status_code == 403 and seen == []


async def test_a_paused_auto_resume_sandbox_is_woken_by_a_request(stack: Stack) -> None:
    sid = (await stack.create({"autoPause": True, "autoResume": {"enabled": True}}))["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    assert (await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())).status_code == 204
    assert stack.manager.route(sid) is None
    async with upstream(ip) as (port, seen):
        response = await stack.client.get("/wake", headers=to(sid, port))
        assert response.status_code == 200 and response.text == f"hello from {ip} /wake"
    assert stack.row(sid).state == RUNNING and stack.manager.route(sid) is not None  # type: ignore[union-attr]
    assert stack.runtime.sandboxes[sid].state == "running"


async def test_a_paused_sandbox_without_auto_resume_stays_paused(stack: Stack) -> None:
    sid = (await stack.create({"autoPause": True}))["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    async with upstream(ip) as (port, seen):
        response = await stack.client.get("/", headers=to(sid, port))
        assert response.status_code == 502 and response.json()["message"] == "The sandbox was not found"
        assert seen == []
    assert stack.row(sid).state == PAUSED  # type: ignore[union-attr]


async def test_an_auto_resume_that_fails_is_502_and_the_sandbox_stays_paused(stack: Stack) -> None:
    sid = (await stack.create({"autoPause": True, "autoResume": {"enabled": True}}))["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    stack.envd.unhealthy.add(ip)
    response = await stack.client.get("/", headers=to(sid, 8080))
    assert response.status_code == 502
    assert stack.row(sid).state == PAUSED and stack.manager.route(sid) is None  # type: ignore[union-attr]


async def test_pausing_tells_the_front_door_to_drop_its_connections_to_the_sandbox(stack: Stack) -> None:
    dropped: list[str] = []
    original: Callable = stack.app.drop_connections

    async def spy(ip: str) -> None:
        dropped.append(ip)
        await original(ip)

    stack.manager.lifecycle._pause_hooks[:] = [spy]
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    assert dropped == [stack.row(sid).ip]  # type: ignore[union-attr]


async def test_a_signed_files_url_without_routing_headers_reaches_the_sandbox_that_signed_it(stack: Stack) -> None:
    from sandlot.protocol.auth import sign

    other = await stack.create()
    body = await stack.create()
    sid, token = body["sandboxID"], body["envdAccessToken"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    async with upstream(ip) as (port, seen):
        stack.app.envd_port = port   # envd's port, where signed /files URLs go (a free one here)
        expiration = 4102444800
        params = {"path": "/home/user/a.txt", "username": "user", "signature_expiration": str(expiration),
                  "signature": sign("/home/user/a.txt", "read", "user", token, expiration)}
        response = await stack.client.get("/files", params=params)
        assert response.status_code == 200 and response.text.startswith(f"hello from {ip} /files?")
        # a signature no running sandbox made, and a write signature used for a read: refused
        forged = dict(params, signature=sign("/home/user/a.txt", "read", "user", other["envdAccessToken"] + "x",
                                             expiration))
        refused = await stack.client.get("/files", params=forged)
        assert refused.status_code == 401 and refused.json()["code"] == 401
        write_sig = dict(params, signature=sign("/home/user/a.txt", "write", "user", token, expiration))
        assert (await stack.client.get("/files", params=write_sig)).status_code == 401
        assert len(seen) == 1
        # once the sandbox is paused its signatures route nowhere
        await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
        assert (await stack.client.get("/files", params=params)).status_code == 401
        assert len(seen) == 1


async def test_a_request_during_an_auto_resume_sandboxs_pause_waits_and_wakes_it(stack: Stack) -> None:
    sid = (await stack.create({"autoPause": True, "autoResume": {"enabled": True}}))["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    freezing, go_on = asyncio.Event(), asyncio.Event()
    original = stack.runtime.pause

    async def slow_pause(sandbox_id: str, **kwargs: bool) -> dict[str, float]:
        freezing.set()
        await go_on.wait()
        return await original(sandbox_id, **kwargs)

    stack.runtime.pause = slow_pause  # type: ignore[method-assign]
    pause = asyncio.create_task(stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers()))
    await freezing.wait()   # the row says pausing, the route is withdrawn
    async with upstream(ip) as (port, seen):
        request = asyncio.create_task(stack.client.get("/during", headers=to(sid, port)))
        for _ in range(50):   # let the request reach the front door and queue behind the pause
            await asyncio.sleep(0)
        assert not request.done() and seen == []
        go_on.set()
        assert (await pause).status_code == 204
        response = await request
        assert response.status_code == 200 and response.text == f"hello from {ip} /during"
    assert stack.row(sid).state == RUNNING  # type: ignore[union-attr]
    assert [c[0] for c in stack.runtime.calls if c[1:] == (sid,)][-2:] == ["resume", "finish_resume"]


async def test_a_node_agent_answers_only_requests_carrying_the_node_token(stack: Stack) -> None:
    """Under ``sandlot node`` the front door is reached only through API instances: without the
    shared token (or with a wrong or doubled one) nothing — API or sandbox traffic — gets through,
    and the token never reaches the sandbox."""
    sid = (await stack.create())["sandboxID"]
    ip = stack.row(sid).ip  # type: ignore[union-attr]
    stack.app.node_token = b"s3cret-node-token"
    try:
        async with upstream(ip) as (port, seen):
            for extra in ({}, {"X-Sandlot-Node-Token": "wrong"}):
                refused = await stack.client.get("/x", headers=to(sid, port, **extra))
                assert refused.status_code == 401 and "X-Sandlot-Node-Token" in refused.json()["message"]
                api = await stack.client.get("/sandboxes", headers={**stack.headers(), **extra})
                assert api.status_code == 401
            doubled = await stack.client.get(
                "/x", headers=[*to(sid, port).items(), ("X-Sandlot-Node-Token", "s3cret-node-token"),
                               ("X-Sandlot-Node-Token", "s3cret-node-token")])
            assert doubled.status_code == 401
            assert seen == []
            ok = await stack.client.get("/x", headers=to(sid, port, **{"X-Sandlot-Node-Token": "s3cret-node-token"}))
            assert ok.status_code == 200 and ok.text == f"hello from {ip} /x"
            assert b"s3cret-node-token" not in seen[0].lower()
            listed = await stack.client.get("/sandboxes", headers={**stack.headers(),
                                                                   "X-Sandlot-Node-Token": "s3cret-node-token"})
            assert listed.status_code == 200 and [s["sandboxID"] for s in listed.json()] == [sid]
    finally:
        stack.app.node_token = None
