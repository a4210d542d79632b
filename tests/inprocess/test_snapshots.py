"""Snapshots and forks: what is stored, what a clone inherits (network policy, env vars), and
that each clone gets an identity of its own through envd ``/init``."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from sandlot.orchestrator.lifecycle import RUNNING
from sandlot.runtime.egress import ALL_IPV4
from sandlot.store.models import Snapshot
from tests.inprocess.conftest import Stack


def snapshots(stack: Stack) -> list[Snapshot]:
    with stack.db.session() as session:
        return list(session.scalars(select(Snapshot)))


async def test_snapshot_stores_a_row_and_a_dir_and_the_sandbox_keeps_running(stack: Stack) -> None:
    sid = (await stack.create({"envVars": {"A": "1"}}))["sandboxID"]
    response = await stack.client.post(f"/sandboxes/{sid}/snapshots", json={"name": "snap-one"},
                                       headers=stack.headers())
    assert response.status_code == 201, response.text
    snapshot_id = response.json()["snapshotID"]
    assert response.json()["names"] == ["snap-one"]
    [snap] = snapshots(stack)
    assert snap.id == snapshot_id and snap.team_id == stack.team_id and snap.source_sandbox_id == sid
    assert snap.env_vars == {"A": "1"} and snap.memory is True
    path = Path(snap.path)
    assert path.parent == stack.settings.snapshots_dir
    assert json.loads((path / "snapshot.json").read_text())["source"] == sid
    assert stack.row(sid).state == RUNNING and stack.runtime.sandboxes[sid].state == "running"  # type: ignore[union-attr]
    listed = await stack.client.get("/snapshots", headers=stack.headers())
    assert [s["snapshotID"] for s in listed.json()] == [snapshot_id]
    assert (await stack.client.get("/snapshots", headers=stack.headers(other=True))).json() == []
    # deleting it removes row and dir
    deleted = await stack.client.delete(f"/templates/{snapshot_id}", headers=stack.headers())
    assert deleted.status_code == 204 and snapshots(stack) == [] and not path.exists()


async def test_a_sandbox_from_a_snapshot_keeps_the_sources_network_policy_and_gets_its_own_token(stack: Stack) -> None:
    network = {"denyOut": ["0.0.0.0/0"], "allowOut": ["1.1.1.1"], "allowPublicTraffic": False,
               "maskRequestHost": "localhost:${PORT}"}
    source = await stack.create({"network": network, "envVars": {"SECRET": "s"}})
    snap = (await stack.client.post(f"/sandboxes/{source['sandboxID']}/snapshots", json={},
                                    headers=stack.headers())).json()["snapshotID"]
    clone = await stack.create({"templateID": snap, "envVars": {"EXTRA": "e"}})
    cid = clone["sandboxID"]
    row = stack.row(cid)
    assert row is not None and row.state == RUNNING and cid != source["sandboxID"]
    assert row.network == network
    policy = stack.runtime.egress[row.ip]
    assert policy.deny == (ALL_IPV4,) and policy.allow == ("1.1.1.1/32",)
    route = stack.manager.route(cid)
    assert route is not None and route.traffic_token == clone["trafficAccessToken"] is not None
    assert route.mask_request_host == "localhost:${PORT}"
    # envd restored from the image holds the source's token: rotated through /init with it
    assert clone["envdAccessToken"] != source["envdAccessToken"]
    [init] = stack.envd.inits_at(row.ip)
    assert init.token == source["envdAccessToken"] and init.body["accessToken"] == clone["envdAccessToken"]
    assert init.body["envVars"] == {"SECRET": "s", "EXTRA": "e"}
    assert stack.envd.tokens[row.ip] == clone["envdAccessToken"]


async def test_explicit_create_options_override_the_snapshots_policy_field_by_field(stack: Stack) -> None:
    source = await stack.create({"network": {"denyOut": ["8.8.8.8"], "allowPublicTraffic": False}})
    snap = (await stack.client.post(f"/sandboxes/{source['sandboxID']}/snapshots", json={},
                                    headers=stack.headers())).json()["snapshotID"]
    clone = await stack.create({"templateID": snap, "network": {"allowPublicTraffic": True}})
    row = stack.row(clone["sandboxID"])
    assert row is not None and row.network == {"denyOut": ["8.8.8.8"], "allowPublicTraffic": True}
    assert clone["trafficAccessToken"] is None
    assert stack.runtime.egress[row.ip].deny == ("8.8.8.8/32",)


async def test_a_clone_whose_envd_refuses_init_leaves_nothing(stack: Stack) -> None:
    from sandlot.orchestrator.envd_client import EnvdInitError

    source = (await stack.create())["sandboxID"]
    snap = (await stack.client.post(f"/sandboxes/{source}/snapshots", json={}, headers=stack.headers())).json()
    stack.envd.fail_init = EnvdInitError(500, "boom")
    response = await stack.client.post("/sandboxes", json={"templateID": snap["snapshotID"]}, headers=stack.headers())
    assert response.status_code == 500 and response.json()["code"] == 500
    assert [r.id for r in stack.rows()] == [source] and list(stack.runtime.sandboxes) == [source]


async def test_fork_makes_n_independent_running_sandboxes(stack: Stack) -> None:
    source = await stack.create({"envVars": {"A": "1"}, "network": {"denyOut": ["8.8.8.8"]}})
    response = await stack.client.post(f"/sandboxes/{source['sandboxID']}/fork", json={"count": 3, "timeout": 60},
                                       headers=stack.headers())
    assert response.status_code == 201, response.text
    forks = [item["sandbox"] for item in response.json()]
    ids = {f["sandboxID"] for f in forks}
    assert len(ids) == 3 and source["sandboxID"] not in ids
    tokens = {f["envdAccessToken"] for f in forks}
    assert len(tokens) == 3 and source["envdAccessToken"] not in tokens
    for fork in forks:
        row = stack.row(fork["sandboxID"])
        assert row is not None and row.state == RUNNING and row.team_id == stack.team_id
        assert stack.manager.route(fork["sandboxID"]) is not None
        assert row.env_vars == {"A": "1"} and row.network == {"denyOut": ["8.8.8.8"]}
        assert stack.runtime.egress[row.ip].deny == ("8.8.8.8/32",)
    assert len(stack.runtime.sandboxes) == 4
    # the fork's image only lived for the call; no snapshot row either
    assert snapshots(stack) == [] and not any(stack.settings.snapshots_dir.glob("fork-*"))


async def test_a_fork_over_quota_reports_the_clones_that_could_not_start(stack: Stack) -> None:
    stack.settings.quota_concurrent_sandboxes = 3
    source = (await stack.create())["sandboxID"]
    response = await stack.client.post(f"/sandboxes/{source}/fork", json={"count": 3}, headers=stack.headers())
    assert response.status_code == 201
    items = response.json()
    assert [("sandbox" in i) for i in items] == [True, True, False]
    assert items[2]["error"]["code"] == 429
    assert len(stack.runtime.sandboxes) == 3 and len(stack.rows()) == 3


async def test_snapshot_of_a_paused_sandbox_is_409(stack: Stack) -> None:
    sid = (await stack.create())["sandboxID"]
    await stack.client.post(f"/sandboxes/{sid}/pause", headers=stack.headers())
    for path in (f"/sandboxes/{sid}/snapshots", f"/sandboxes/{sid}/fork"):
        response = await stack.client.post(path, json={}, headers=stack.headers())
        assert response.status_code == 409 and response.json()["code"] == 409
    assert snapshots(stack) == [] and len(stack.runtime.sandboxes) == 1
    assert not stack.settings.snapshots_dir.exists() or not any(stack.settings.snapshots_dir.iterdir())


async def test_snapshot_names_are_per_team_and_reusing_one_replaces_its_content(stack: Stack) -> None:
    first = (await stack.create({"envVars": {"V": "1"}}))["sandboxID"]
    second = (await stack.create({"envVars": {"V": "2"}}))["sandboxID"]
    a = await stack.client.post(f"/sandboxes/{first}/snapshots", json={"name": "n"}, headers=stack.headers())
    old_path = Path(snapshots(stack)[0].path)
    b = await stack.client.post(f"/sandboxes/{second}/snapshots", json={"name": "n"}, headers=stack.headers())
    assert a.json()["snapshotID"] == b.json()["snapshotID"]
    [snap] = snapshots(stack)
    assert snap.source_sandbox_id == second and snap.env_vars == {"V": "2"} and not old_path.exists()
    theirs = (await stack.create(other=True))["sandboxID"]
    c = await stack.client.post(f"/sandboxes/{theirs}/snapshots", json={"name": "n"}, headers=stack.headers(other=True))
    assert c.status_code == 201 and c.json()["snapshotID"] != a.json()["snapshotID"]
    # a team cannot start a sandbox from another team's snapshot by name
    clone = await stack.create({"templateID": "n"}, other=True)
    assert stack.row(clone["sandboxID"]).env_vars == {}  # type: ignore[union-attr]


async def test_the_snapshot_quota_is_429_before_any_dump(stack: Stack) -> None:
    stack.settings.quota_snapshots = 1
    sid = (await stack.create())["sandboxID"]
    first = await stack.client.post(f"/sandboxes/{sid}/snapshots", json={"name": "a"}, headers=stack.headers())
    assert first.status_code == 201
    over = await stack.client.post(f"/sandboxes/{sid}/snapshots", json={"name": "b"}, headers=stack.headers())
    assert over.status_code == 429 and over.headers["should-retry"] == "false"
    assert stack.runtime.calls.count(("snapshot", sid)) == 1
    assert len(snapshots(stack)) == 1 and len(list(stack.settings.snapshots_dir.iterdir())) == 1
    # re-using the name adds no snapshot: allowed at the limit
    again = await stack.client.post(f"/sandboxes/{sid}/snapshots", json={"name": "a"}, headers=stack.headers())
    assert again.status_code == 201 and len(list(stack.settings.snapshots_dir.iterdir())) == 1


async def test_a_failed_snapshot_leaves_no_row_and_no_dir(stack: Stack) -> None:
    from sandlot.runtime.base import SandboxRuntimeError

    sid = (await stack.create())["sandboxID"]
    stack.runtime.fail_next["snapshot"] = SandboxRuntimeError("criu dump failed")
    response = await stack.client.post(f"/sandboxes/{sid}/snapshots", json={}, headers=stack.headers())
    assert response.status_code == 500 and "keeps running" in response.json()["message"]
    assert snapshots(stack) == [] and not any(stack.settings.snapshots_dir.glob("*"))
    assert stack.row(sid).state == RUNNING  # type: ignore[union-attr]
