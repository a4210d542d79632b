"""Control-plane parity (issue 15) in-process: /secrets, /teams and team metrics, /api-keys,
/access-tokens, ``GET /v2/templates``, ``PATCH /templates/{id}`` names, the CLI login page."""

from __future__ import annotations

import urllib.parse
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from sandlot.store import secrets as secret_store
from sandlot.store import templates as template_store
from sandlot.store.models import SandboxRun, TeamSecret
from tests.inprocess.conftest import Stack

VALUE = "s3cr3t-value-canary-7f3a"


# --- secrets -----------------------------------------------------------------------------------------


async def test_secret_crud_never_returns_the_value(stack: Stack) -> None:
    created = await stack.client.post("/secrets", json={"name": "  OpenAI-Key ", "value": VALUE,
                                                        "metadata": {"env": "prod"}}, headers=stack.headers())
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"secretID", "name", "currentVersion", "metadata", "createdAt", "updatedAt"}
    assert body["name"] == "openai-key" and body["currentVersion"] == 1 and body["metadata"] == {"env": "prod"}
    assert body["secretID"].startswith("sec_") and len(body["secretID"]) == 30
    assert created.headers["cache-control"] == "no-store"
    sid = body["secretID"]

    by_id = await stack.client.get(f"/secrets/{sid}", headers=stack.headers())
    by_name = await stack.client.get("/secrets/OPENAI-KEY", headers=stack.headers())
    assert by_id.json() == by_name.json() == body

    updated = await stack.client.post(f"/secrets/{sid}", json={"value": VALUE + "-2"}, headers=stack.headers())
    assert updated.status_code == 200 and updated.json()["currentVersion"] == 2
    assert updated.json()["metadata"] == {"env": "prod"}   # omitted: kept
    cleared = await stack.client.post("/secrets/openai-key", json={"value": VALUE + "-3", "metadata": {}},
                                      headers=stack.headers())
    assert cleared.json()["metadata"] == {} and cleared.json()["currentVersion"] == 3

    listed = await stack.client.get("/secrets", headers=stack.headers())
    assert [s["secretID"] for s in listed.json()] == [sid]
    for response in (created, by_id, updated, cleared, listed):
        assert VALUE not in response.text

    # the host side reads the current value; the row holds only ciphertext
    with stack.db.session() as session:
        assert secret_store.secret_value(session, stack.team_id, "openai-key") == VALUE + "-3"
        assert secret_store.secret_value(session, stack.team_id, sid) == VALUE + "-3"
        assert secret_store.secret_value(session, stack.other_team_id, sid) is None
        row = session.get(TeamSecret, sid)
        assert row is not None and VALUE not in row.ciphertext
    raw = (stack.settings.data_dir / "sandlot.db").read_bytes()
    assert VALUE.encode() not in raw

    deleted = await stack.client.delete(f"/secrets/{sid}", headers=stack.headers())
    assert deleted.status_code == 204
    missing = await stack.client.get(f"/secrets/{sid}", headers=stack.headers())
    assert missing.status_code == 404 and missing.json()["code"] == 404
    assert (await stack.client.delete(f"/secrets/{sid}", headers=stack.headers())).status_code == 404


async def test_secret_rules_answer_400_and_409_without_echoing_the_value(stack: Stack) -> None:
    bad = [
        {"name": "sec_abc", "value": VALUE},
        {"name": "has space", "value": VALUE},
        {"name": "x" * 129, "value": VALUE},
        {"name": "ok", "value": ""},
        {"name": "ok", "value": "v" * (64 * 1024 + 1)},
        {"name": "ok", "value": VALUE, "metadata": {f"k{i}": "v" for i in range(33)}},
        {"name": "ok", "value": VALUE, "metadata": {"k": "v" * 1025}},
        {"name": "ok", "value": 12345},
        {"name": 7, "value": VALUE},
    ]
    for body in bad:
        response = await stack.client.post("/secrets", json=body, headers=stack.headers())
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == 400 and VALUE not in response.text and "12345" not in response.text
    assert (await stack.client.post("/secrets", json={"name": "dup", "value": VALUE}, headers=stack.headers())).status_code == 201
    again = await stack.client.post("/secrets", json={"name": "DUP", "value": VALUE}, headers=stack.headers())
    assert again.status_code == 409 and VALUE not in again.text
    # the other team may use the same name
    other = await stack.client.post("/secrets", json={"name": "dup", "value": "x"}, headers=stack.headers(other=True))
    assert other.status_code == 201
    with stack.db.session() as session:
        assert len(list(session.scalars(select(TeamSecret)))) == 2   # nothing stored by the rejected bodies


async def test_secret_list_pages_with_next_token(stack: Stack) -> None:
    ids = [(await stack.client.post("/secrets", json={"name": f"s{i}", "value": "v"}, headers=stack.headers())).json()["secretID"]
           for i in range(5)]
    seen, token, pages = [], None, 0
    while True:
        params = {"limit": "2", **({"nextToken": token} if token else {})}
        response = await stack.client.get("/secrets", params=params, headers=stack.headers())
        assert response.status_code == 200
        seen += [s["secretID"] for s in response.json()]
        pages += 1
        token = response.headers.get("x-next-token")
        if not token:
            break
    assert pages == 3 and sorted(seen) == sorted(ids) and len(seen) == 5
    for params in ({"limit": "0"}, {"limit": "101"}, {"nextToken": "not-a-token"}):
        assert (await stack.client.get("/secrets", params=params, headers=stack.headers())).status_code == 400


async def test_another_team_cannot_see_or_touch_a_secret(stack: Stack) -> None:
    sid = (await stack.client.post("/secrets", json={"name": "mine", "value": VALUE}, headers=stack.headers())).json()["secretID"]
    other = stack.headers(other=True)
    assert (await stack.client.get("/secrets", headers=other)).json() == []
    for ref in (sid, "mine"):
        assert (await stack.client.get(f"/secrets/{ref}", headers=other)).status_code == 404
        assert (await stack.client.post(f"/secrets/{ref}", json={"value": "x"}, headers=other)).status_code == 404
        assert (await stack.client.delete(f"/secrets/{ref}", headers=other)).status_code == 404
    with stack.db.session() as session:
        assert secret_store.secret_value(session, stack.team_id, sid) == VALUE
    assert (await stack.client.get("/secrets")).status_code == 401
    for odd in ("sec_" + "0" * 26, "nul%00byte", "x" * 300, "SEC_abc"):
        assert (await stack.client.get(f"/secrets/{odd}", headers=stack.headers())).status_code == 404, odd


async def test_a_sealed_value_moved_to_another_row_does_not_open(stack: Stack) -> None:
    a = (await stack.client.post("/secrets", json={"name": "a", "value": "alpha"}, headers=stack.headers())).json()
    b = (await stack.client.post("/secrets", json={"name": "b", "value": "beta"}, headers=stack.headers())).json()
    with stack.db.session() as session, session.begin():
        row_a, row_b = session.get(TeamSecret, a["secretID"]), session.get(TeamSecret, b["secretID"])
        assert row_a is not None and row_b is not None
        row_b.ciphertext = row_a.ciphertext
    with stack.db.session() as session:
        try:
            secret_store.secret_value(session, stack.team_id, "b")
        except Exception as exc:   # AES-GCM's tag check: bound to the secret's id and version
            assert "alpha" not in str(exc)
        else:
            raise AssertionError("a ciphertext opened under another secret's id")
        assert secret_store.secret_value(session, stack.team_id, "a") == "alpha"


# --- API keys and access tokens --------------------------------------------------------------------


async def test_api_keys_crud_masks_and_team_scope(stack: Stack) -> None:
    listed = await stack.client.get("/api-keys", headers=stack.headers())
    assert listed.status_code == 200 and len(listed.json()) == 1
    mask = listed.json()[0]["mask"]
    assert mask == {"prefix": "e2b_", "valueLength": 40, "maskedValuePrefix": stack.api_key[4:6],
                    "maskedValueSuffix": stack.api_key[-4:]}
    assert stack.api_key not in listed.text and stack.other_key not in listed.text

    created = await stack.client.post("/api-keys", json={"name": "ci"}, headers=stack.headers())
    assert created.status_code == 201
    new = created.json()
    assert new["key"].startswith("e2b_") and len(new["key"]) == 44 and new["name"] == "ci"
    assert set(new) == {"id", "name", "mask", "createdAt", "createdBy", "lastUsed", "key"}
    # the new key works, and is never shown again
    assert (await stack.client.get("/secrets", headers={"X-API-Key": new["key"]})).status_code == 200
    again = await stack.client.get("/api-keys", headers=stack.headers())
    assert len(again.json()) == 2 and new["key"] not in again.text
    assert next(k for k in again.json() if k["id"] == new["id"])["lastUsed"] is not None

    # another team can't list, rename or delete it
    other = stack.headers(other=True)
    assert new["id"] not in (await stack.client.get("/api-keys", headers=other)).text
    assert (await stack.client.patch(f"/api-keys/{new['id']}", json={"name": "x"}, headers=other)).status_code == 404
    assert (await stack.client.delete(f"/api-keys/{new['id']}", headers=other)).status_code == 404

    renamed = await stack.client.patch(f"/api-keys/{new['id']}", json={"name": "renamed"}, headers=stack.headers())
    assert renamed.status_code == 202 and renamed.content == b""
    assert any(k["name"] == "renamed" for k in (await stack.client.get("/api-keys", headers=stack.headers())).json())
    assert (await stack.client.delete(f"/api-keys/{new['id']}", headers=stack.headers())).status_code == 204
    assert (await stack.client.get("/secrets", headers={"X-API-Key": new["key"]})).status_code == 401
    assert (await stack.client.delete(f"/api-keys/{new['id']}", headers=stack.headers())).status_code == 404
    assert (await stack.client.post("/api-keys", json={"name": ""}, headers=stack.headers())).status_code == 400


async def test_access_tokens_and_get_teams(stack: Stack) -> None:
    # /teams takes an access token, not an API key (as E2B)
    refused = await stack.client.get("/teams", headers=stack.headers())
    assert refused.status_code == 401 and "access token" in refused.json()["message"]
    made = await stack.client.post("/access-tokens", json={"name": "laptop"}, headers=stack.headers())
    assert made.status_code == 201
    token = made.json()
    assert token["token"].startswith("sk_e2b_") and len(token["token"]) == 47
    assert token["mask"]["prefix"] == "sk_e2b_" and token["mask"]["maskedValueSuffix"] == token["token"][-4:]
    bearer = {"Authorization": f"Bearer {token['token']}"}

    teams = await stack.client.get("/teams", headers=bearer)
    assert teams.status_code == 200
    [team] = teams.json()
    assert team["teamID"] == stack.team_id and team["isDefault"] is True and team["name"] == "team-a"
    assert (await stack.client.get("/secrets", headers={"X-API-Key": team["apiKey"]})).status_code == 200
    # a token also authenticates the team routes, and X-Team-ID must be its own team
    assert (await stack.client.get("/api-keys", headers=bearer)).status_code == 200
    wrong = await stack.client.get("/api-keys", headers={**bearer, "X-Team-ID": stack.other_team_id})
    assert wrong.status_code == 403

    # another team can't delete it; its owner can, and then it is dead
    assert (await stack.client.delete(f"/access-tokens/{token['id']}", headers=stack.headers(other=True))).status_code == 404
    assert (await stack.client.delete(f"/access-tokens/{token['id']}", headers=stack.headers())).status_code == 204
    assert (await stack.client.get("/teams", headers=bearer)).status_code == 401
    assert (await stack.client.delete(f"/access-tokens/{token['id']}", headers=stack.headers())).status_code == 404


# --- team metrics ------------------------------------------------------------------------------------


async def test_team_runs_follow_create_pause_resume_kill(stack: Stack) -> None:
    first = (await stack.create())["sandboxID"]
    second = (await stack.create())["sandboxID"]
    third = (await stack.create(other=True))["sandboxID"]

    def runs(sandbox_id: str) -> list[bool]:
        """Each run of the sandbox: whether it is still open."""
        with stack.db.session() as session:
            stmt = select(SandboxRun).where(SandboxRun.sandbox_id == sandbox_id).order_by(SandboxRun.id)
            return [r.ended_at is None for r in session.scalars(stmt)]

    assert runs(first) == runs(second) == runs(third) == [True]
    assert (await stack.client.post(f"/sandboxes/{second}/pause", headers=stack.headers())).status_code == 204
    assert runs(second) == [False]
    assert (await stack.client.post(f"/sandboxes/{second}/resume", json={}, headers=stack.headers())).status_code == 201
    assert runs(second) == [False, True]
    assert (await stack.client.delete(f"/sandboxes/{first}", headers=stack.headers())).status_code == 204
    assert runs(first) == [False]
    now = int(datetime.now(timezone.utc).timestamp())
    series = await stack.client.get(f"/teams/{stack.team_id}/metrics", params={"start": now - 60, "end": now + 1},
                                    headers=stack.headers())
    assert series.status_code == 200, series.text
    points = series.json()
    assert set(points[0]) == {"timestamp", "timestampUnix", "concurrentSandboxes", "sandboxStartRate"}
    assert [p["timestampUnix"] % 5 for p in points] == [0] * len(points)   # 5 s steps under an hour
    assert round(sum(p["sandboxStartRate"] * 5 for p in points)) == 3   # two creates and a resume
    assert max(p["concurrentSandboxes"] for p in points) == 2   # never the other team's


async def test_team_metrics_series_and_max_over_known_runs(stack: Stack) -> None:
    base = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)   # on a 30 s step
    with stack.db.session() as session, session.begin():
        for sid, start, end in (("a", 0, 100), ("b", 10, 40), ("c", 35, None), ("d", 36, 37)):
            session.add(SandboxRun(team_id=stack.team_id, sandbox_id=sid, started_at=base + timedelta(seconds=start),
                                   ended_at=base + timedelta(seconds=end) if end is not None else None))
        session.add(SandboxRun(team_id=stack.other_team_id, sandbox_id="x", started_at=base, ended_at=None))
    start = int(base.timestamp())
    # 2 h range: 30 s steps
    response = await stack.client.get(f"/teams/{stack.team_id}/metrics",
                                      params={"start": start, "end": start + 7200}, headers=stack.headers())
    points = response.json()
    assert len(points) == 241 and points[0]["timestampUnix"] == start
    # [0,30): a, b → 2; [30,60): a, b (till 40), c (from 35), d (36-37) → 4 at 36; [60,90): a, c; [90,120): a then c
    assert [p["concurrentSandboxes"] for p in points[:5]] == [2, 4, 2, 2, 1]
    assert [round(p["sandboxStartRate"] * 30) for p in points[:3]] == [2, 2, 0]
    assert points[-1]["concurrentSandboxes"] == 1   # c still runs
    peak = await stack.client.get(f"/teams/{stack.team_id}/metrics/max", headers=stack.headers(),
                                  params={"metric": "concurrent_sandboxes", "start": start, "end": start + 7200})
    assert peak.json() == {"timestamp": "2026-11-30T12:00:30Z", "timestampUnix": start + 30, "value": 4}
    rate = await stack.client.get(f"/teams/{stack.team_id}/metrics/max", headers=stack.headers(),
                                  params={"metric": "sandbox_start_rate", "start": start, "end": start + 7200})
    assert rate.json()["timestampUnix"] == start and abs(rate.json()["value"] - 2 / 30) < 1e-6


async def test_team_metrics_refuse_other_teams_and_bad_ranges(stack: Stack) -> None:
    other = await stack.client.get(f"/teams/{stack.other_team_id}/metrics", headers=stack.headers())
    assert other.status_code == 403 and other.json()["code"] == 403
    backwards = await stack.client.get(f"/teams/{stack.team_id}/metrics", params={"start": 200, "end": 100},
                                       headers=stack.headers())
    assert backwards.status_code == 400
    too_long = await stack.client.get(f"/teams/{stack.team_id}/metrics",
                                      params={"start": 0, "end": 40 * 86400}, headers=stack.headers())
    assert too_long.status_code == 400
    no_metric = await stack.client.get(f"/teams/{stack.team_id}/metrics/max", headers=stack.headers())
    assert no_metric.status_code == 400
    default = await stack.client.get(f"/teams/{stack.team_id}/metrics", headers=stack.headers())
    assert default.status_code == 200 and len(default.json()) == 7 * 24 * 4 + 1   # 15 min steps over 7 days
    assert all(p["concurrentSandboxes"] == 0 for p in default.json())
    old = datetime.now(timezone.utc) - timedelta(days=40)
    with stack.db.session() as session, session.begin():
        session.add(SandboxRun(team_id=stack.team_id, sandbox_id="gone", started_at=old, ended_at=old))
    await stack.client.get(f"/teams/{stack.team_id}/metrics", headers=stack.headers())
    with stack.db.session() as session:
        assert session.scalars(select(SandboxRun).where(SandboxRun.sandbox_id == "gone")).first() is None


# --- templates ----------------------------------------------------------------------------------------


async def test_v2_templates_pages_newest_first_and_patch_returns_names(stack: Stack) -> None:
    with stack.db.session() as session, session.begin():
        for i in range(3):
            template_store.register_ready(session, alias=f"app{i}", team_id=stack.team_id, public=False,
                                          layers=[str(stack.settings.data_dir)], cpu_count=1, memory_mb=256,
                                          disk_mb=1024, envd_version="0.1.0")
    seen, token = [], None
    for _ in range(10):
        params = {"limit": "2", **({"nextToken": token} if token else {})}
        response = await stack.client.get("/v2/templates", params=params, headers=stack.headers())
        assert response.status_code == 200, response.text
        seen += response.json()
        token = response.headers.get("x-next-token")
        if not token:
            break
    names = [t["names"] for t in seen]
    assert len(seen) == 4 and ["base"] in names   # three own + the public base
    created = [t["createdAt"] for t in seen]
    assert created == sorted(created, reverse=True)
    mine = next(t for t in seen if t["aliases"] == ["app1"])
    assert mine["names"][0].endswith("/app1")
    assert (await stack.client.get("/v2/templates", params={"teamID": stack.other_team_id},
                                   headers=stack.headers())).status_code == 400
    assert "app1" not in (await stack.client.get("/v2/templates", headers=stack.headers(other=True))).text

    for path in (f"/v2/templates/{mine['templateID']}", f"/templates/{mine['templateID']}"):
        published = await stack.client.patch(path, json={"public": True}, headers=stack.headers())
        assert published.status_code == 200 and published.json() == {"names": mine["names"]}
    assert "app1" in (await stack.client.get("/v2/templates", headers=stack.headers(other=True))).text
    denied = await stack.client.patch(f"/v2/templates/{mine['templateID']}", json={"public": False},
                                      headers=stack.headers(other=True))
    assert denied.status_code == 404


# --- the CLI's login page -------------------------------------------------------------------------------


async def test_cli_login_hands_tokens_only_to_a_loopback_listener(stack: Stack) -> None:
    page = await stack.client.get("/docs/api/cli", params={"next": "http://localhost:43123", "cliVersion": "2.19.0"})
    assert page.status_code == 200 and "apiKey" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for evil in ("https://evil.example", "http://evil.example:43123", "http://localhost:43123/steal",
                 "http://user@localhost:43123", "http://localhost", "javascript:alert(1)", "http://127.0.0.1.evil:80"):
        assert (await stack.client.get("/docs/api/cli", params={"next": evil})).status_code == 400, evil
        posted = await stack.client.post("/docs/api/cli", data={"next": evil, "apiKey": stack.api_key})
        assert posted.status_code == 400 and "location" not in posted.headers, evil
    wrong = await stack.client.post("/docs/api/cli", data={"next": "http://localhost:43123", "apiKey": "e2b_nope"})
    assert wrong.status_code == 401 and "location" not in wrong.headers

    done = await stack.client.post("/docs/api/cli", data={"next": "http://localhost:43123", "apiKey": stack.api_key})
    assert done.status_code == 303
    target = urllib.parse.urlsplit(done.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("http", "localhost:43123", "/")
    got = dict(urllib.parse.parse_qsl(target.query))
    assert set(got) == {"email", "accessToken", "refreshToken", "tokenEndpoint", "revokeEndpoint", "clientId"}
    teams = await stack.client.get("/teams", headers={"Authorization": f"Bearer {got['accessToken']}"})
    assert teams.status_code == 200 and teams.json()[0]["teamID"] == stack.team_id

    # refresh rotates both tokens; revoke ends the session
    refreshed = await stack.client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                              "refresh_token": got["refreshToken"], "client_id": "x"})
    assert refreshed.status_code == 200
    fresh = refreshed.json()
    assert (await stack.client.get("/teams", headers={"Authorization": f"Bearer {got['accessToken']}"})).status_code == 401
    reused = await stack.client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                           "refresh_token": got["refreshToken"]})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert (await stack.client.post("/oauth/revoke", data={"token": fresh["refresh_token"]})).status_code == 200
    assert (await stack.client.get("/teams", headers={"Authorization": f"Bearer {fresh['access_token']}"})).status_code == 401

    big = await stack.client.post("/docs/api/cli", data={"next": "http://localhost:43123", "apiKey": "x" * 20000})
    assert big.status_code == 413 and "location" not in big.headers
    assert (await stack.client.post("/oauth/token", content=b"grant_type=" + b"r" * 20000,
                                    headers={"content-type": "application/x-www-form-urlencoded"})).status_code == 413

    # the page that reflects the CLI's state escapes it
    shown = await stack.client.get("/docs/api/cli", params={"state": "error", "error": "<script>x</script>"})
    assert "<script>x" not in shown.text and "&lt;script&gt;" in shown.text
