"""One team never sees another team's sandboxes: 404, not 403."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import NotFoundException

from tests.e2e.server import SANDLOT, Server


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    out = subprocess.run(
        [str(SANDLOT), "keys", "create", "--team", "other-team", "--name", "test"],
        env=server.env(),
        check=True,
        capture_output=True,
        text=True,
    )
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("e2b_")
    return key


def test_other_team_gets_404(server: Server, sandbox: Sandbox, other_key: str) -> None:
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sandbox.sandbox_id, api_key=other_key)
    assert Sandbox.kill(sandbox.sandbox_id, api_key=other_key) is False
    listed = Sandbox.list(api_key=other_key).next_items()
    assert sandbox.sandbox_id not in [s.sandbox_id for s in listed]
    response = httpx.post(
        f"{server.url}/sandboxes/{sandbox.sandbox_id}/timeout", json={"timeout": 30}, headers={"X-API-Key": other_key}
    )
    assert response.status_code == 404
    assert sandbox.is_running()


def test_other_team_has_its_own_sandboxes(server: Server, other_key: str) -> None:
    theirs = Sandbox.create(api_key=other_key)
    try:
        assert theirs.commands.run("echo ok").stdout == "ok\n"
        mine = [s.sandbox_id for s in Sandbox.list().next_items()]
        assert theirs.sandbox_id not in mine
    finally:
        theirs.kill()


def test_revoked_key_is_refused(server: Server) -> None:
    out = subprocess.run(
        [str(SANDLOT), "keys", "create", "--name", "short-lived"], env=server.env(), check=True, capture_output=True, text=True
    )
    key = out.stdout.strip().splitlines()[-1]
    assert httpx.get(f"{server.url}/v2/sandboxes", headers={"X-API-Key": key}).status_code == 200
    subprocess.run([str(SANDLOT), "keys", "revoke", key], env=server.env(), check=True, capture_output=True)
    assert httpx.get(f"{server.url}/v2/sandboxes", headers={"X-API-Key": key}).status_code == 401
