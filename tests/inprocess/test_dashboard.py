"""The dashboard's sign-in, session, CSRF and team rules in-process (the browser test,
tests/e2e/test_dashboard.py, covers the pages, terminal and files against a real server)."""

from __future__ import annotations

import re

import httpx
import pytest
from pathlib import Path

from tests.inprocess.conftest import Stack, StoreTemplate, start_stack, stop_stack

COOKIE = "sandlot_dash"


async def sign_in(stack: Stack, key: str) -> tuple[httpx.AsyncClient, str]:
    """A client with its own cookie jar, signed in; returns it and the session's CSRF token."""
    client = httpx.AsyncClient(transport=stack.client._transport, base_url="http://sandlot.test")
    form = await client.get("/dashboard/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token is not None
    done = await client.post("/dashboard/login", data={"api_key": key, "login_token": token.group(1)})
    assert done.status_code == 303, done.text
    page = await client.get("/dashboard/sandboxes")
    csrf = re.search(r'name="csrf-token" content="([^"]*)"', page.text)
    assert page.status_code == 200 and csrf is not None and csrf.group(1)
    return client, csrf.group(1)


async def test_the_cookie_refers_to_a_server_side_session(stack: Stack) -> None:
    client, _ = await sign_in(stack, stack.api_key)
    try:
        cookie = client.cookies.get(COOKIE, domain="sandlot.test") or client.cookies.get(COOKIE)
        assert cookie and stack.api_key not in cookie
        login = await client.get("/dashboard/login")
        assert login.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in login.headers["content-security-policy"]
        anonymous = await stack.client.get("/dashboard/sandboxes")
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/dashboard/login"
    finally:
        await client.aclose()


async def test_sign_in_needs_its_form_token_and_a_real_key(stack: Stack) -> None:
    bare = await stack.client.post("/dashboard/login", data={"api_key": stack.api_key})
    assert bare.status_code == 403 and COOKIE not in bare.headers.get("set-cookie", "")
    client = httpx.AsyncClient(transport=stack.client._transport, base_url="http://sandlot.test")
    try:
        form = await client.get("/dashboard/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token is not None
        wrong = await client.post("/dashboard/login", data={"api_key": "e2b_" + "1" * 40, "login_token": token.group(1)})
        assert wrong.status_code == 401 and COOKIE not in wrong.headers.get("set-cookie", "")
    finally:
        await client.aclose()


async def test_another_teams_sandbox_is_404_and_posts_need_csrf(stack: Stack) -> None:
    mine = (await stack.create())["sandboxID"]
    client, csrf = await sign_in(stack, stack.other_key)
    try:
        for path in ("", "/metrics.json", "/files"):
            assert (await client.get(f"/dashboard/sandboxes/{mine}{path}")).status_code == 404
        assert (await client.post(f"/dashboard/sandboxes/{mine}/kill", data={"csrf": csrf})).status_code == 404
        listing = await client.get("/dashboard/sandboxes/list")
        assert mine not in listing.text
    finally:
        await client.aclose()
    owner, owner_csrf = await sign_in(stack, stack.api_key)
    try:
        assert mine in (await owner.get("/dashboard/sandboxes/list")).text
        for data in ({}, {"csrf": "forged"}, {"csrf": csrf}):   # another session's token is no token
            assert (await owner.post(f"/dashboard/sandboxes/{mine}/kill", data=data)).status_code == 403
        assert stack.row(mine) is not None and stack.row(mine).state == "running"  # type: ignore[union-attr]
        killed = await owner.post(f"/dashboard/sandboxes/{mine}/kill", data={"csrf": owner_csrf})
        assert killed.status_code == 303
        assert stack.row(mine) is None or stack.row(mine).state in ("killing", "gone")  # type: ignore[union-attr]
    finally:
        await owner.aclose()


async def test_revoking_the_key_ends_the_session(stack: Stack) -> None:
    client, csrf = await sign_in(stack, stack.api_key)
    try:
        created = await client.post("/dashboard/team/keys", data={"csrf": csrf, "name": "temp"})
        assert created.status_code == 303 and "e2b_" not in created.headers["location"]
        team = await client.get("/dashboard/team")
        new_key = re.search(r'id="new-key">(e2b_[0-9a-f]{40})<', team.text)
        assert new_key is not None
        assert "e2b_" not in (await client.get("/dashboard/team")).text.split('id="keys"')[0]   # shown once
        second, _ = await sign_in(stack, new_key.group(1))
        ids = re.findall(r'data-key-id="([^"]+)"><td class="key-name">temp<', team.text)
        assert len(ids) == 1
        revoked = await client.post(f"/dashboard/team/keys/{ids[0]}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303
        ended = await second.get("/dashboard/sandboxes")
        assert ended.status_code == 303 and ended.headers["location"] == "/dashboard/login"
        await second.aclose()
    finally:
        await client.aclose()


async def test_tenant_text_is_escaped(stack: Stack) -> None:
    """Metadata (tenant-controlled) shows as text: no markup, no htmx attributes reach the page."""
    attack = '<img src=x onerror="alert(1)" hx-post="/dashboard/logout">'
    sandbox = (await stack.create({"metadata": {"note": attack}}))["sandboxID"]
    client, _ = await sign_in(stack, stack.api_key)
    try:
        for path in ("/dashboard/sandboxes/list", f"/dashboard/sandboxes/{sandbox}"):
            page = await client.get(path)
            assert page.status_code == 200
            assert attack not in page.text and "&lt;img src=x onerror=&#34;alert(1)&#34;" in page.text
    finally:
        await client.aclose()


async def test_missing_front_end_files_are_announced(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandlot.dashboard import common

    monkeypatch.setattr(common, "VENDOR", tmp_path / "no-vendor")
    page = await stack.client.get("/dashboard/login")
    assert page.status_code == 200
    assert 'id="assets-missing"' in page.text and "make dashboard-assets" in page.text
    assert "/dashboard/static/vendor/htmx.min.js" not in page.text


async def test_operator_page_needs_the_operator_token(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template, admin_token="adm_" + "7" * 32)
    try:
        team, _ = await sign_in(stack, stack.api_key)
        assert (await team.get("/dashboard/operator")).status_code == 403
        await team.aclose()
        operator = httpx.AsyncClient(transport=stack.client._transport, base_url="http://sandlot.test")
        form = await operator.get("/dashboard/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token is not None
        done = await operator.post("/dashboard/login", data={"api_key": "adm_" + "7" * 32, "login_token": token.group(1)})
        assert done.status_code == 303
        page = await operator.get("/dashboard/operator")
        assert page.status_code == 200 and "Warm pools" in page.text and 'id="server-status"' in page.text
        away = await operator.get("/dashboard/sandboxes")   # an operator has no team pages
        assert away.status_code == 303 and away.headers["location"] == "/dashboard/operator"
        await operator.aclose()
    finally:
        await stop_stack(stack)


async def test_sign_out_ends_the_session(stack: Stack) -> None:
    client, csrf = await sign_in(stack, stack.api_key)
    try:
        cookie = client.cookies.get(COOKIE)
        assert (await client.post("/dashboard/logout", data={})).status_code == 403   # no token: still signed in
        assert (await client.get("/dashboard/sandboxes")).status_code == 200
        out = await client.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        replay = httpx.AsyncClient(transport=stack.client._transport, base_url="http://sandlot.test",
                                   cookies={COOKIE: cookie or ""})
        assert (await replay.get("/dashboard/sandboxes")).status_code == 303   # the old cookie is dead
        await replay.aclose()
    finally:
        await client.aclose()
