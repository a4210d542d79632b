"""Secrets are per team and write-only (issue 15): another team's key can't list, read, update
or delete them; their values appear in no response, no error, no server log line and not in
the database file; the host side can still read them (the canary), and the CLI login hands
tokens only to a listener on the user's own machine."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from sandlot.store import secrets as secret_store
from sandlot.store.database import Database
from tests.e2e.server import SANDLOT, Server, data_dir


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", f"secrets-other-{uuid.uuid4().hex[:6]}",
                          "--name", "t"], env=server.env(), check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _call(server: Server, method: str, path: str, key: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers={"X-API-Key": key}, timeout=30, **kwargs)  # type: ignore[arg-type]


def _host_side_value(server: Server, team_key: str, ref: str) -> str | None:
    """What the egress code would read: the store opened with the data dir's key."""
    db = Database(server.database_url)
    try:
        secret_store.register_key(db.engine, data_dir())
        with db.session() as session:
            from sandlot.store import keys

            team_id = keys.team_for_key(session, team_key)
            assert team_id is not None
            return secret_store.secret_value(session, team_id, ref)
    finally:
        db.dispose()


def test_another_team_can_not_list_read_change_or_delete_a_secret(server: Server, other_key: str) -> None:
    canary = "canary-" + secrets.token_hex(16)
    name = f"victim-{uuid.uuid4().hex[:8]}"
    made = _call(server, "POST", "/secrets", server.api_key, json={"name": name, "value": canary})
    assert made.status_code == 201
    sid = made.json()["secretID"]
    try:
        listing = _call(server, "GET", "/secrets", other_key)
        assert listing.status_code == 200 and sid not in listing.text and name not in listing.text
        for ref in (sid, name, name.upper()):
            assert _call(server, "GET", f"/secrets/{ref}", other_key).status_code == 404
            assert _call(server, "POST", f"/secrets/{ref}", other_key, json={"value": "overwritten"}).status_code == 404
            assert _call(server, "DELETE", f"/secrets/{ref}", other_key).status_code == 404
        # the other team's same-named secret is its own, and changes nothing of the victim's
        assert _call(server, "POST", "/secrets", other_key, json={"name": name, "value": "theirs"}).status_code == 201
        # the canary on the host: the owner's value is intact and readable host-side only
        assert _host_side_value(server, server.api_key, sid) == canary
        assert _host_side_value(server, other_key, name) == "theirs"
        owner = _call(server, "GET", f"/secrets/{sid}", server.api_key)
        assert owner.status_code == 200 and owner.json()["currentVersion"] == 1 and canary not in owner.text
    finally:
        _call(server, "DELETE", f"/secrets/{sid}", server.api_key)
        _call(server, "DELETE", f"/secrets/{name}", other_key)


def test_values_never_appear_in_responses_errors_logs_or_the_database(server: Server) -> None:
    canary = "canary-" + secrets.token_hex(16)
    name = f"quiet-{uuid.uuid4().hex[:8]}"
    seen: list[httpx.Response] = []
    seen.append(_call(server, "POST", "/secrets", server.api_key, json={"name": name, "value": canary,
                                                                         "metadata": {"k": "v"}}))
    assert seen[-1].status_code == 201
    sid = seen[-1].json()["secretID"]
    seen.append(_call(server, "POST", f"/secrets/{sid}", server.api_key, json={"value": canary + "-2"}))
    seen.append(_call(server, "GET", f"/secrets/{sid}", server.api_key))
    seen.append(_call(server, "GET", "/secrets", server.api_key))
    # errors that carry the value in the request
    seen.append(_call(server, "POST", "/secrets", server.api_key, json={"name": name, "value": canary}))   # 409
    seen.append(_call(server, "POST", "/secrets", server.api_key, json={"name": "sec_x", "value": canary}))
    seen.append(_call(server, "POST", "/secrets", server.api_key, json={"name": "ok", "value": [canary]}))
    seen.append(_call(server, "POST", "/secrets", server.api_key, json={"name": canary, "value": canary,
                                                                         "extra": {"nested": canary}, "metadata": 5}))
    seen.append(_call(server, "POST", "/secrets", server.api_key, content=b'{"name": "x", "value": "' + canary.encode()))
    seen.append(_call(server, "POST", f"/secrets/{sid}", server.api_key, json={"value": canary * 5000}))
    seen.append(_call(server, "POST", "/secrets", "e2b_" + "0" * 40, json={"name": "x", "value": canary}))
    assert [r.status_code for r in seen] == [201, 200, 200, 200, 409, 400, 400, 400, 400, 400, 401]
    for response in seen:
        assert canary not in response.text and canary not in str(response.headers)
        assert response.headers.get("content-type", "").startswith("application/json")
    assert all(r.headers["cache-control"] == "no-store" for r in seen[:4])
    try:
        log = (server.workdir / "server.log").read_text(errors="replace")
        assert canary not in log
        stored = b"".join(Path(f"{server.workdir / 'sandlot.db'}{suffix}").read_bytes()
                          for suffix in ("", "-wal") if Path(f"{server.workdir / 'sandlot.db'}{suffix}").exists())
        assert canary.encode() not in stored   # at rest: sealed
        assert (data_dir() / secret_store.KEY_FILE).stat().st_mode & 0o077 == 0   # the key: 0600
        assert _host_side_value(server, server.api_key, name) == canary + "-2"   # the legitimate read
    finally:
        assert _call(server, "DELETE", f"/secrets/{sid}", server.api_key).status_code == 204
    assert _host_side_value(server, server.api_key, name) is None


@pytest.mark.parametrize("evil", ["https://attacker.example/", "http://attacker.example:8080",
                                  "http://localhost.attacker.example:8080", "http://127.0.0.1:8080/cb",
                                  "http://me@127.0.0.1:8080", "//attacker.example", "http://[::1]:8080"])
def test_cli_login_never_sends_tokens_off_the_users_machine(server: Server, evil: str) -> None:
    page = httpx.get(f"{server.url}/docs/api/cli", params={"next": evil}, timeout=30)
    assert page.status_code == 400
    posted = httpx.post(f"{server.url}/docs/api/cli", data={"next": evil, "apiKey": server.api_key}, timeout=30)
    assert posted.status_code == 400 and "location" not in posted.headers and "sk_e2b_" not in posted.text
    # the legitimate flow next to it: the CLI's loopback listener gets the tokens
    good = httpx.post(f"{server.url}/docs/api/cli", data={"next": "http://localhost:40000", "apiKey": server.api_key},
                      timeout=30)
    assert good.status_code == 303 and good.headers["location"].startswith("http://localhost:40000/?")


def test_another_team_can_not_see_or_revoke_this_teams_keys_tokens_or_metrics(server: Server, other_key: str) -> None:
    mine = {"X-API-Key": server.api_key}
    key = httpx.post(f"{server.url}/api-keys", json={"name": "victim-key"}, headers=mine, timeout=30).json()
    token = httpx.post(f"{server.url}/access-tokens", json={"name": "victim-token"}, headers=mine, timeout=30).json()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    team_id = httpx.get(f"{server.url}/teams", headers=bearer, timeout=30).json()[0]["teamID"]
    try:
        theirs = httpx.get(f"{server.url}/api-keys", headers={"X-API-Key": other_key}, timeout=30)
        assert theirs.status_code == 200 and key["id"] not in theirs.text and "victim" not in theirs.text
        for method, path in (("DELETE", f"/api-keys/{key['id']}"), ("PATCH", f"/api-keys/{key['id']}"),
                             ("DELETE", f"/access-tokens/{token['id']}")):
            attack = _call(server, method, path, other_key, json={"name": "pwned"} if method == "PATCH" else None)
            assert attack.status_code == 404, (method, path)
        for path in (f"/teams/{team_id}/metrics", f"/teams/{team_id}/metrics/max?metric=concurrent_sandboxes"):
            assert _call(server, "GET", path, other_key).status_code == 403
        # X-Team-ID can't point an own credential at the victim team either
        assert httpx.get(f"{server.url}/api-keys", timeout=30,
                         headers={"X-API-Key": other_key, "X-Team-ID": team_id}).status_code == 403
        # the canaries: the victim's key and token still work, unrenamed
        assert _call(server, "GET", "/secrets", key["key"]).status_code == 200
        assert httpx.get(f"{server.url}/teams", headers=bearer, timeout=30).status_code == 200
        names = [k["name"] for k in httpx.get(f"{server.url}/api-keys", headers=mine, timeout=30).json()]
        assert "victim-key" in names and "pwned" not in names
    finally:
        _call(server, "DELETE", f"/api-keys/{key['id']}", server.api_key)
        _call(server, "DELETE", f"/access-tokens/{token['id']}", server.api_key)
