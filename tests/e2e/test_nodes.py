"""E2B's admin node routes on a real `sandlot serve`, with httpx as the operator's client and the
e2b SDK as the tenant's: the server lists itself as its one node, a drain makes creates answer 503
while a running sandbox keeps running commands, and enabling the node lets creates through again."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import ServiceBusyException

from sandlot import ids
from tests.e2e.server import Server, sdk_pointed_at

TOKEN = secrets.token_hex(24)


@pytest.fixture(scope="module")
def node_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-nodes"), api_key=ids.new_api_key(),
                 extra_env={"SANDLOT_ADMIN_TOKEN": TOKEN, "SANDLOT_NODE_ID": "e2e-node",
                            "SANDLOT_NODE_HEARTBEAT_S": "1", "SANDLOT_WARM_POOL_SIZE": "0"})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


def test_drain_stops_creates_and_keeps_sandboxes(node_server: Server) -> None:
    ops = httpx.Client(base_url=node_server.url, headers={"X-Admin-Token": TOKEN}, timeout=30)
    assert httpx.get(f"{node_server.url}/nodes", timeout=30).status_code == 401
    nodes = ops.get("/nodes").json()
    assert [(n["nodeID"], n["status"]) for n in nodes] == [("e2e-node", "ready")]
    first_beat = nodes[0]["lastHeartbeat"]

    sbx = Sandbox.create(timeout=120)
    try:
        detail = ops.get("/nodes/e2e-node").json()
        assert detail["sandboxCount"] == 1
        assert [s["sandboxID"] for s in detail["sandboxes"]] == [sbx.sandbox_id]
        deadline = time.monotonic() + 15   # heartbeats every second (SANDLOT_NODE_HEARTBEAT_S=1)
        while ops.get("/nodes/e2e-node").json()["lastHeartbeat"] == first_beat and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ops.get("/nodes/e2e-node").json()["lastHeartbeat"] > first_beat

        assert ops.post("/nodes/e2e-node", json={"status": "draining"}).status_code == 204
        refused = httpx.post(f"{node_server.url}/sandboxes", json={"templateID": "base"},
                             headers={"X-API-Key": node_server.api_key}, timeout=30)
        assert refused.status_code == 503
        assert refused.json()["code"] == 503 and "draining" in refused.json()["message"]
        with pytest.raises(ServiceBusyException):   # the SDK's name for a 503
            Sandbox.create(timeout=60)
        assert sbx.commands.run("echo still here").stdout.strip() == "still here"
        assert ops.get("/nodes/e2e-node").json()["status"] == "draining"

        assert ops.post("/nodes/e2e-node", json={"status": "ready"}).status_code == 204
        second = Sandbox.create(timeout=60)
        try:
            assert second.commands.run("echo placed").stdout.strip() == "placed"
            assert ops.get("/nodes/e2e-node").json()["sandboxCount"] == 2
        finally:
            second.kill()
    finally:
        ops.post("/nodes/e2e-node", json={"status": "ready"})
        sbx.kill()
        ops.close()
