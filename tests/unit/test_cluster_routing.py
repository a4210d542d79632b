"""The API tier's decisions without a cluster: which path names which sandbox, how placement ranks
nodes, and how the sweeper reports a silent node's sandboxes (docs/scale-out.md). The real-SDK
cluster tests (tests/e2e/test_cluster.py) drive the same code through PostgreSQL and node agents."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from sandlot.cluster import placement
from sandlot.cluster.directory import NodeView
from sandlot.cluster.router import merge_bulk, sandbox_of_path
from sandlot.cluster.sweeper import Sweeper
from sandlot.settings import Settings
from sandlot.store import keys
from sandlot.store import nodes as node_store
from sandlot.store.database import Database
from sandlot.store.models import LifecycleEvent, Sandbox


@pytest.mark.parametrize(("path", "sandbox"), [
    ("/sandboxes/abc123", "abc123"),
    ("/sandboxes/abc123/pause", "abc123"),
    ("/sandboxes/abc123/snapshots", "abc123"),
    ("/v2/sandboxes/abc123/logs", "abc123"),
    ("/api/v1/sandbox/abc123", "abc123"),
    ("/api/v1/sandbox/abc123/logs", "abc123"),
    ("/sandboxes", None),
    ("/v2/sandboxes", None),
    ("/sandboxes/metrics", None),
    ("/api/v1/sandbox", None),
    ("/api/v1/sandbox/status:batchGet", None),
    ("/api/v1/sandbox/checkpoints/x", None),
    ("/api/v1/sandbox/volumes", None),
    ("/templates/abc123", None),
    ("/gateway/team-ns/abc123/exec", "abc123"),
    ("/gateway/team-ns", None),
])
def test_the_router_finds_the_sandbox_a_path_is_about(path: str, sandbox: str | None) -> None:
    assert sandbox_of_path(path) == sandbox


def _node(node_id: str, status: str = node_store.READY, slots: int = 100, memory_mb: int = 10_000) -> NodeView:
    return NodeView(node_id, f"{node_id}:3000", status, 2, memory_mb, slots)


def test_placement_prefers_free_memory_then_locality_and_skips_full_draining_and_silent_nodes() -> None:
    nodes = [_node("a"), _node("b"), _node("c", node_store.DRAINING), _node("d", node_store.UNAVAILABLE),
             _node("e", slots=2)]
    load = {"a": placement.Load(3, 1536, 0), "b": placement.Load(1, 512, 0), "e": placement.Load(2, 1024, 2)}
    assert [n.id for n in placement.rank(nodes, load)] == ["b", "a"]
    # equal load: the node already running the template wins (cached layers, maybe a warm sandbox)
    load = {"a": placement.Load(1, 512, 1), "b": placement.Load(1, 512, 0)}
    assert [n.id for n in placement.rank(nodes[:2], load)][0] == "a"
    # ... but locality never outweighs a whole sandbox's worth of memory (spreading wins)
    load = {"a": placement.Load(2, 1024, 2), "b": placement.Load(1, 512, 0)}
    assert [n.id for n in placement.rank(nodes[:2], load)][0] == "b"
    assert placement.rank([_node("c", node_store.DRAINING)], {}) == []
    # equal memory: the node with more vCPUs free wins
    load = {"a": placement.Load(1, 512, 0, 8), "b": placement.Load(1, 512, 0, 1)}
    assert [n.id for n in placement.rank(nodes[:2], load)][0] == "b"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'sandlot.db'}")
    database.migrate()
    return database


def _sandbox(team_id: str, sandbox_id: str, node_id: str, state: str, memory_mb: int = 512) -> Sandbox:
    now = datetime.now(timezone.utc)
    return Sandbox(id=sandbox_id, team_id=team_id, template_id="base", build_id="b", alias="base", state=state,
                   started_at=now, end_at=now + timedelta(minutes=5), cpu_count=1, memory_mb=memory_mb,
                   disk_mb=1024, envd_version="0.1", envd_access_token="t", metadata_={}, env_vars={},
                   node_id=node_id)


def test_placement_load_is_one_grouped_query_over_active_rows(db: Database) -> None:
    with db.session() as session, session.begin():
        team = keys.get_or_create_default_team(session)
        session.add_all([_sandbox(team.id, "s1", "a", "running"), _sandbox(team.id, "s2", "a", "creating", 1024),
                         _sandbox(team.id, "s3", "a", "paused"), _sandbox(team.id, "s4", "b", "running")])
    with db.session() as session:
        load = placement.loads(session, "base")
    assert load["a"] == placement.Load(2, 1536, 2, 2)   # the paused one holds no memory, vCPU or slot
    assert load["b"] == placement.Load(1, 512, 1, 1)


def test_the_sweeper_reports_a_silent_nodes_live_sandboxes_gone_and_keeps_its_paused_ones(
        db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, node_heartbeat_s=1.0, database_url=f"sqlite:///{tmp_path / 'sandlot.db'}")
    now = datetime.now(timezone.utc)
    with db.session() as session:
        team_id = keys.get_or_create_default_team(session).id
        session.commit()
        capacity = node_store.Capacity(2, 4096, 100)
        node_store.register(session, "alive", "10.0.0.1:3000", capacity, "1", now)
        node_store.register(session, "silent", "10.0.0.2:3000", capacity, "1", now - timedelta(seconds=30))
    with db.session() as session, session.begin():
        session.add_all([_sandbox(team_id, "lost-run", "silent", "running"),
                         _sandbox(team_id, "lost-new", "silent", "creating"),
                         _sandbox(team_id, "kept-paused", "silent", "paused"),
                         _sandbox(team_id, "kept-other", "alive", "running")])
    sweeper = Sweeper(settings, db)
    assert sorted(sweeper.sweep()) == ["lost-new", "lost-run"]
    assert sweeper.sweep() == []   # nothing left to report
    asyncio.run(sweeper.events.flush())
    with db.session() as session:
        assert sorted(session.scalars(select(Sandbox.id))) == ["kept-other", "kept-paused"]
        events = {(e.sandbox_id, e.type) for e in session.scalars(select(LifecycleEvent))}
    assert ("lost-run", "sandbox.lifecycle.killed") in events


def test_a_bulk_delete_fanned_out_to_every_node_fails_a_sandbox_only_if_no_node_deleted_it() -> None:
    import json

    a = json.dumps({"succeeded": ["s1"], "failed": [{"s2": "Sandbox not found"}, {"s3": "Sandbox not found"}]})
    b = json.dumps({"succeeded": ["s2"], "failed": [{"s1": "Sandbox not found"}, {"s3": "Sandbox not found"}]})
    merged = merge_bulk([(200, a.encode()), (200, b.encode())])
    assert merged == {"succeeded": ["s1", "s2"], "failed": [{"s3": "Sandbox not found"}],
                      "message": "Deleted 2 sandbox(es), 1 failed"}
    assert merge_bulk([(422, b"{}"), (422, b"{}")]) is None
