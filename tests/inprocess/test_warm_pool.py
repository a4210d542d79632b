"""The warm pool (size 1): a pooled sandbox is identity-less and unrouted; a create claims it and
hands it its identity through ``/init``, authenticated with the pool's rotated token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandlot.orchestrator.lifecycle import RUNNING
from tests.inprocess.conftest import Stack, StoreTemplate, start_stack, stop_stack


@pytest.fixture
async def pooled(tmp_path: Path, store_template: StoreTemplate) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path, store_template, warm_pool_size=1)
    try:
        yield s
    finally:
        await stop_stack(s)


async def test_no_pool_boots_nothing(stack: Stack) -> None:
    await stack.manager.pool.settled()
    assert stack.runtime.sandboxes == {} and stack.manager.pool.pooled_ids() == set()


async def test_a_create_claims_the_pooled_sandbox_and_inits_it_with_the_rotated_token(pooled: Stack) -> None:
    pool = pooled.manager.pool
    await pool.settled()
    [pid] = pool.pooled_ids()
    ip = pooled.runtime.sandboxes[pid].ip
    boot_token = pooled.manager.boot.tokens.boot_token(pooled.build)
    # booted with the build's boot token, warmed up, then rotated to a token of its own
    assert pooled.envd.warm_ups == [ip]
    [rotate] = pooled.envd.inits_at(ip)
    assert rotate.token == boot_token and set(rotate.body) == {"accessToken"}
    rotated = rotate.body["accessToken"]
    assert rotated != boot_token
    # identity-less: no row, no route, the front door does not reach it
    assert pooled.row(pid) is None and pooled.manager.route(pid) is None
    refused = await pooled.client.get("/", headers={"E2b-Sandbox-Id": pid, "E2b-Sandbox-Port": "49983"})
    assert refused.status_code == 502

    body = await pooled.create({"envVars": {"A": "1"}, "metadata": {"m": "x"}})
    assert body["sandboxID"] == pid
    claim = pooled.envd.inits_at(ip)[-1]
    assert claim.token == rotated
    assert claim.body["accessToken"] == body["envdAccessToken"] != rotated
    assert claim.body["envVars"]["A"] == "1"
    assert claim.body["defaultUser"] == "user" and claim.body["defaultWorkdir"] == "/home/user"
    assert pooled.envd.tokens[ip] == body["envdAccessToken"]
    row = pooled.row(pid)
    assert row is not None and row.state == RUNNING and row.metadata_ == {"m": "x"}
    assert pooled.manager.route(pid) is not None
    assert ("create", pid) in pooled.runtime.calls and pooled.runtime.calls.count(("create", pid)) == 1

    # the pool refills with another sandbox
    await pool.settled()
    [refill] = pool.pooled_ids()
    assert refill != pid and pooled.row(refill) is None


async def test_a_claimed_sandbox_resumed_without_memory_gets_its_identity_back(pooled: Stack) -> None:
    await pooled.manager.pool.settled()
    body = await pooled.create({"envVars": {"A": "1"}})
    sid = body["sandboxID"]
    ip = pooled.row(sid).ip  # type: ignore[union-attr]
    response = await pooled.client.post(f"/sandboxes/{sid}/pause", json={"memory": False}, headers=pooled.headers())
    assert response.status_code == 204
    assert (await pooled.client.post(f"/sandboxes/{sid}/resume", json={}, headers=pooled.headers())).status_code == 201
    # envd rebooted from the container's config, which holds the pool's boot token: the
    # sandbox's own token is refused (401) and the boot token opens it
    last = pooled.envd.inits_at(ip)[-1]
    assert last.token == pooled.manager.boot.tokens.boot_token(pooled.build)
    assert last.body["accessToken"] == body["envdAccessToken"] and last.body["envVars"]["A"] == "1"
    assert pooled.envd.tokens[ip] == body["envdAccessToken"]


async def test_a_claim_whose_init_fails_kills_the_pooled_sandbox(pooled: Stack) -> None:
    from sandlot.orchestrator.envd_client import EnvdInitError

    await pooled.manager.pool.settled()
    [pid] = pooled.manager.pool.pooled_ids()
    pooled.envd.fail_init = EnvdInitError(500, "envd broke")
    response = await pooled.client.post("/sandboxes", json={"templateID": "base"}, headers=pooled.headers())
    assert response.status_code == 500 and response.json()["code"] == 500
    assert pid not in pooled.runtime.sandboxes and pooled.row(pid) is None and pooled.rows() == []
    await pooled.manager.pool.settled()
    assert pooled.manager.pool.pooled_ids() and pid not in pooled.manager.pool.pooled_ids()


async def test_pooled_sandboxes_are_orphans_after_a_restart(pooled: Stack) -> None:
    await pooled.manager.pool.settled()
    [pid] = pooled.manager.pool.pooled_ids()
    manager = pooled.new_manager()
    await manager.recover()
    await manager.close()
    assert pid not in pooled.runtime.sandboxes


async def test_a_dead_pooled_sandbox_is_not_handed_to_a_create(pooled: Stack) -> None:
    await pooled.manager.pool.settled()
    [pid] = pooled.manager.pool.pooled_ids()
    pooled.runtime.die(pid)
    body = await pooled.create()
    sid = body["sandboxID"]
    # booted afresh (under the claimed id): a live container, running row
    assert pooled.row(sid).state == RUNNING  # type: ignore[union-attr]
    assert pooled.runtime.sandboxes[sid].state == "running"


async def test_a_claim_is_one_store_write_made_after_the_init(pooled: Stack) -> None:
    """Issue 14: the pooled sandbox's row is inserted as running in one transaction, once envd has
    its identity; the refill boots in the background at a lower CPU weight until claimed."""
    from sqlalchemy import event

    await pooled.manager.pool.settled()
    [pid] = pooled.manager.pool.pooled_ids()
    ip = pooled.runtime.sandboxes[pid].ip
    writes: list[tuple[str, int]] = []   # sandbox-row statements, with how many inits envd had seen

    def listener(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT INTO SANDBOXES", "UPDATE SANDBOXES")):
            writes.append((statement.split()[0].upper(), len(pooled.envd.inits_at(ip))))

    event.listen(pooled.db.engine, "before_cursor_execute", listener)
    try:
        body = await pooled.create()
    finally:
        event.remove(pooled.db.engine, "before_cursor_execute", listener)
    assert body["sandboxID"] == pid
    # one insert, no update, after the rotate (1st init) and the claim's /init (2nd)
    assert writes == [("INSERT", 2)]
    assert ("foreground", pid) in pooled.runtime.calls
    await pooled.manager.pool.settled()
    [refill] = pooled.manager.pool.pooled_ids()
    assert ("foreground", refill) not in pooled.runtime.calls


async def test_a_team_at_its_quota_gets_429_without_using_up_a_pooled_sandbox(pooled: Stack) -> None:
    pooled.settings.quota_concurrent_sandboxes = 1
    await pooled.create()
    await pooled.manager.pool.settled()
    [pid] = pooled.manager.pool.pooled_ids()
    response = await pooled.client.post("/sandboxes", json={"templateID": "base"}, headers=pooled.headers())
    assert response.status_code == 429
    assert pooled.manager.pool.pooled_ids() == {pid} and pooled.row(pid) is None
    assert len(pooled.envd.inits_at(pooled.runtime.sandboxes[pid].ip)) == 1   # only the pool's rotate
