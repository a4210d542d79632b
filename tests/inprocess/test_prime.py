"""The Prime façade over the same engine, in-process: a Prime create launches an engine sandbox
in the background; both façades see it; errors answer in Prime's shape."""

from __future__ import annotations

import asyncio

from sandlot.orchestrator.lifecycle import RUNNING
from tests.inprocess.conftest import Stack


def prime_headers(stack: Stack, *, other: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.other_key if other else stack.api_key}"}


async def launched(stack: Stack) -> None:
    """Wait for the façade's background launches (each one is a task of the Prime context)."""
    await asyncio.gather(*list(stack.app.api.state.prime.tasks), return_exceptions=True)


async def prime_create(stack: Stack, **fields: object) -> dict:
    response = await stack.client.post("/api/v1/sandbox", json={"name": "p", "docker_image": "base", **fields},
                                       headers=prime_headers(stack))
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_prime_create_runs_an_engine_sandbox_both_facades_see(stack: Stack) -> None:
    body = await prime_create(stack, labels=["exp"], environment_vars={"A": "1"})
    sid = body["id"]
    assert body["status"] == "PENDING" and body["gatewayAuth"]["job_id"] == sid
    await launched(stack)
    got = await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))
    assert got.status_code == 200 and got.json()["status"] == "RUNNING" and got.json()["labels"] == ["exp"]
    row = stack.row(sid)
    assert row is not None and row.state == RUNNING and stack.manager.route(sid) is not None
    assert row.env_vars == {"A": "1"} and row.metadata_ == {"prime.name": "p"}
    e2b = await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers())
    assert e2b.status_code == 200 and e2b.json()["state"] == "running"
    # another team sees it through neither façade
    assert (await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack, other=True))).status_code == 404
    assert (await stack.client.get(f"/sandboxes/{sid}", headers=stack.headers(other=True))).status_code == 404
    deleted = await stack.client.delete(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))
    assert deleted.status_code == 200, deleted.text
    await stack.manager.settled()
    assert stack.row(sid) is None and stack.runtime.sandboxes == {}
    gone = await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))
    assert gone.status_code == 200 and gone.json()["status"] == "TERMINATED"


async def test_prime_errors_are_primes_shape(stack: Stack) -> None:
    stack.settings.quota_concurrent_sandboxes = 1
    await prime_create(stack)
    over = await stack.client.post("/api/v1/sandbox", json={"name": "q", "docker_image": "base"},
                                   headers=prime_headers(stack))
    assert over.status_code == 429 and set(over.json()) == {"detail"}
    assert "should-retry" not in over.headers   # E2B's SDK header; Prime's client has no such rule
    missing = await stack.client.get("/api/v1/sandbox/nosuchsandbox", headers=prime_headers(stack))
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
    invalid = await stack.client.post("/api/v1/sandbox", json={"name": "", "docker_image": "base"},
                                      headers=prime_headers(stack))
    assert invalid.status_code == 422 and isinstance(invalid.json()["detail"], list)
    await launched(stack)
    assert len(stack.runtime.sandboxes) == 1


async def test_a_prime_sandbox_killed_by_the_oom_killer_reports_it(stack: Stack) -> None:
    sid = (await prime_create(stack))["id"]
    await launched(stack)
    stack.runtime.die(sid, oom=True)
    await stack.manager.bury_dead()
    got = await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "ERROR" and got.json()["errorType"], got.json()
    assert stack.row(sid) is None and stack.runtime.sandboxes == {}


async def test_a_prime_launch_that_fails_is_an_error_and_frees_its_slot(stack: Stack) -> None:
    from sandlot.runtime.base import SandboxRuntimeError

    stack.settings.quota_concurrent_sandboxes = 1
    stack.runtime.fail_next["create"] = SandboxRuntimeError("runc create failed")
    sid = (await prime_create(stack))["id"]
    await launched(stack)
    got = await stack.client.get(f"/api/v1/sandbox/{sid}", headers=prime_headers(stack))
    assert got.json()["status"] == "ERROR", got.json()
    assert stack.rows() == [] and stack.runtime.sandboxes == {}
    await prime_create(stack)   # the failed launch holds no slot
