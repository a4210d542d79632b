"""In-process: the node registry and E2B's admin ``/nodes`` routes — the server is its one node,
operator-only access, drain stops creates (503) and leaves running sandboxes alone, enable restores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sandlot.store import nodes as node_store
from tests.inprocess.conftest import StoreTemplate, start_stack, stop_stack

TOKEN = "op-" + "n" * 40


async def test_nodes_drain_and_enable(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template, admin_token=TOKEN, node_id="box-1")
    try:
        client = stack.client
        ops = {"X-Admin-Token": TOKEN}
        assert (await client.get("/nodes")).status_code == 401
        assert (await client.get("/nodes", headers={"X-Admin-Token": "wrong"})).status_code == 401
        assert (await client.get("/nodes", headers=stack.headers())).status_code == 401   # an API key is no token

        running = (await stack.create())["sandboxID"]
        listed = (await client.get("/nodes", headers=ops)).json()
        assert [n["nodeID"] for n in listed] == ["box-1"]
        node = listed[0]
        assert node["status"] == "ready"
        assert node["sandboxCount"] == 1
        assert node["metrics"]["cpuCount"] >= 1 and node["metrics"]["memoryTotalBytes"] > 0
        assert node["sandboxSlots"] > 0

        detail = (await client.get("/nodes/box-1", headers=ops)).json()
        assert [s["sandboxID"] for s in detail["sandboxes"]] == [running]
        assert (await client.get("/nodes/nope", headers=ops)).status_code == 404
        assert (await client.post("/nodes/nope", headers=ops, json={"status": "draining"})).status_code == 404
        bad = await client.post("/nodes/box-1", headers=ops, json={"status": "unhealthy"})
        assert bad.status_code == 400 and "draining" in bad.json()["message"]
        assert (await client.post("/nodes/box-1", json={"status": "draining"})).status_code == 401

        assert (await client.post("/nodes/box-1", headers=ops, json={"status": "draining"})).status_code == 204
        assert (await client.get("/nodes/box-1", headers=ops)).json()["status"] == "draining"
        refused = await client.post("/sandboxes", headers=stack.headers(), json={"templateID": "base"})
        assert refused.status_code == 503
        assert refused.json()["code"] == 503 and "draining" in refused.json()["message"]
        still = await client.get(f"/sandboxes/{running}", headers=stack.headers())
        assert still.status_code == 200 and still.json()["state"] == "running"

        assert (await client.post("/nodes/box-1", headers=ops, json={"status": "ready"})).status_code == 204
        second = (await stack.create())["sandboxID"]
        assert second != running
        assert (await client.get("/nodes/box-1", headers=ops)).json()["sandboxCount"] == 2
    finally:
        await stop_stack(stack)


async def test_nodes_off_without_admin_token(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template)
    try:
        response = await stack.client.get("/nodes", headers={"X-Admin-Token": "anything"})
        assert response.status_code == 403
        assert "SANDLOT_ADMIN_TOKEN" in response.json()["message"]
    finally:
        await stop_stack(stack)


def test_stale_heartbeat_reads_unavailable(tmp_path: Path) -> None:
    from sandlot.store.database import Database

    db = Database(f"sqlite:///{tmp_path / 'n.db'}")
    db.migrate()
    now = datetime.now(timezone.utc)
    with db.session() as session:
        row = node_store.register(session, "n1", "127.0.0.1:3000", node_store.Capacity(2, 1024, 64), "0", now)
        assert node_store.effective_status(row, now + timedelta(seconds=29), 30) == "ready"
        assert node_store.effective_status(row, now + timedelta(seconds=31), 30) == "unavailable"
        assert node_store.set_status(session, "n1", "draining")
        again = node_store.register(session, "n1", "127.0.0.1:3001", node_store.Capacity(2, 1024, 64), "0", now)
        assert again.status == "draining" and again.address == "127.0.0.1:3001"   # a drain survives a restart
        assert node_store.heartbeat(session, "n1", now + timedelta(seconds=5))
        assert not node_store.heartbeat(session, "gone", now)
    db.dispose()


async def test_a_drain_written_elsewhere_applies_at_the_next_heartbeat(tmp_path: Path,
                                                                       store_template: StoreTemplate) -> None:
    """Another process sharing the database drains the node: the next heartbeat reads it."""
    stack = await start_stack(tmp_path, store_template, admin_token=TOKEN, node_id="box-2")
    try:
        registry = stack.services.sandboxes.nodes
        with stack.services.db.session() as session:
            assert node_store.set_status(session, "box-2", "draining")   # not through this server's route
        await registry.tick()
        refused = await stack.client.post("/sandboxes", headers=stack.headers(), json={"templateID": "base"})
        assert refused.status_code == 503
        with stack.services.db.session() as session:
            assert node_store.set_status(session, "box-2", "ready")
        await registry.tick()
        assert (await stack.create())["sandboxID"]
    finally:
        await stop_stack(stack)


async def test_a_node_acts_only_on_what_it_holds(tmp_path: Path, store_template: StoreTemplate) -> None:
    """Under ``sandlot node`` (several servers, one store): rows are stamped with the node; a
    request for another node's running sandbox is a 404 here, never a kill of a stranger's row; the
    reaper leaves other nodes' expired rows alone; and a sandbox this node runs but whose row an
    API instance's sweeper removed (the node looked dead) is torn down."""
    stack = await start_stack(tmp_path, store_template, role="node", node_id="node-a", admin_token=TOKEN)
    try:
        mine = (await stack.create())["sandboxID"]
        assert stack.row(mine).node_id == "node-a"  # type: ignore[union-attr]
        theirs = (await stack.create())["sandboxID"]
        stack.update(theirs, node_id="node-b", end_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        manager = stack.manager
        stack.manager.lifecycle._routes.pop(theirs)   # node-b's: this node has no route to it
        # reads come from the shared store (any node answers them); acting on it is the holder's job
        assert (await stack.client.get(f"/sandboxes/{theirs}", headers=stack.headers())).status_code == 200
        assert (await stack.client.post(f"/sandboxes/{theirs}/pause", headers=stack.headers())).status_code == 404
        assert (await stack.client.delete(f"/sandboxes/{theirs}", headers=stack.headers())).status_code == 404
        await manager.expire_due()
        assert stack.row(theirs) is not None and stack.row(theirs).state == "running"  # type: ignore[union-attr]
        listed = (await stack.client.get("/nodes/node-a", headers={"X-Admin-Token": TOKEN})).json()
        assert [s["sandboxID"] for s in listed["sandboxes"]] == [mine]

        with stack.db.session() as session, session.begin():   # the sweeper reported `mine` gone
            from sandlot.store.models import Sandbox

            row = session.get(Sandbox, mine)
            session.delete(row)
        assert await stack.runtime.is_alive(mine)
        await manager.drop_disowned()
        await manager.settled()
        assert manager.route(mine) is None
        assert not await stack.runtime.is_alive(mine)
    finally:
        await stop_stack(stack)


async def test_reset_of_a_node_forgets_only_its_own_rows(tmp_path: Path, store_template: StoreTemplate) -> None:
    """``sandlot reset`` on one host of a cluster must not wipe the other nodes' sandboxes from the
    shared store."""
    import types

    from sandlot.cli import _reset
    from sandlot.store.database import Database
    from tests.inprocess.conftest import EnvdFakeRuntime, FakeEnvd

    stack = await start_stack(tmp_path, store_template, role="node", node_id="node-a")
    try:
        mine = (await stack.create())["sandboxID"]
        theirs = (await stack.create())["sandboxID"]
        stack.update(theirs, node_id="node-b")
        settings = stack.settings
    finally:
        await stop_stack(stack)
    db = Database(settings.effective_database_url)
    try:
        await _reset(types.SimpleNamespace(runtime=EnvdFakeRuntime(FakeEnvd()), db=db, settings=settings,
                                           sandboxes=types.SimpleNamespace(nodes=types.SimpleNamespace(node_id="node-a"))))
        from sandlot.store.models import Sandbox

        with db.session() as session:
            assert session.get(Sandbox, mine) is None
            assert session.get(Sandbox, theirs) is not None
    finally:
        db.dispose()
