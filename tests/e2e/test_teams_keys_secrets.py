"""Control-plane parity (issue 15) against a real ``sandlot serve``: secrets through the SDK's
``Secret``/``AsyncSecret``, ``GET /v2/templates`` and ``PATCH /v2/templates/{id}`` through the
SDK's own generated client, teams/keys/tokens/metrics over HTTP (the SDK has no methods for
them), and ``e2b auth login`` + ``e2b template publish`` with the unmodified CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSecret, Sandbox, Secret, SecretNotFoundException, Template
from e2b.api.client.api.templates import get_v2_templates, patch_v_2_templates_template_id
from e2b.api.client.models import TemplateUpdateRequest
from e2b.api.client_sync import get_api_client
from e2b.connection_config import ConnectionConfig

from tests.e2e.server import Server
from tests.e2e.test_js_sdk import JS_DIR, _node_major

E2B_CLI = JS_DIR / "node_modules" / ".bin" / "e2b"


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_secrets_with_the_sync_sdk(server: Server) -> None:
    name = _name()
    info = Secret.create(name.upper(), "sync-canary-value", metadata={"owner": "tests"})
    try:
        assert info.name == name and info.version == 1 and info.metadata == {"owner": "tests"}
        assert info.secret_id.startswith("sec_")
        assert Secret.get_info(name).secret_id == info.secret_id
        assert Secret.get_info(info.secret_id).name == name
        updated = Secret.update(name, "sync-canary-value-2")
        assert updated.version == 2 and updated.metadata == {"owner": "tests"}
        replaced = Secret.update(info.secret_id, "sync-canary-value-3", metadata={})
        assert replaced.version == 3 and replaced.metadata == {}
        listed: list[str] = []
        paginator = Secret.list(limit=1)
        while paginator.has_next:
            listed += [s.secret_id for s in paginator.next_items()]
        assert info.secret_id in listed
        assert Secret.exists(name)
    finally:
        assert Secret.destroy(name) is True
    assert not Secret.exists(name)
    assert Secret.destroy(name) is False
    with pytest.raises(SecretNotFoundException):
        Secret.get_info(info.secret_id)


async def test_secrets_with_the_async_sdk(server: Server) -> None:
    name = _name()
    info = await AsyncSecret.create(name, "async-canary-value")
    try:
        assert (await AsyncSecret.get_info(name)).secret_id == info.secret_id
        assert (await AsyncSecret.update(name, "async-canary-value-2")).version == 2
        page = await AsyncSecret.list().next_items()
        assert name in [s.name for s in page]
    finally:
        assert await AsyncSecret.destroy(info.secret_id) is True
    assert not await AsyncSecret.exists(name)


def _get(server: Server, path: str, headers: dict[str, str], **params: object) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers=headers, params=params, timeout=30)


def test_keys_tokens_teams_and_metrics(server: Server) -> None:
    key = {"X-API-Key": server.api_key}
    made = httpx.post(f"{server.url}/access-tokens", json={"name": "e2e"}, headers=key, timeout=30)
    assert made.status_code == 201, made.text
    bearer = {"Authorization": f"Bearer {made.json()['token']}"}
    [team] = _get(server, "/teams", bearer).json()
    assert team["isDefault"] is True and team["apiKey"].startswith("e2b_")
    team_id = team["teamID"]

    created = httpx.post(f"{server.url}/api-keys", json={"name": "e2e-key"}, headers=key, timeout=30).json()
    listed = _get(server, "/api-keys", key).json()
    assert {k["id"] for k in listed} >= {created["id"]}
    assert all(created["key"] not in str(k) and server.api_key not in str(k) for k in listed)

    start = int(time.time()) - 5
    with Sandbox.create(timeout=60) as sbx:
        assert sbx.is_running()
        series = _get(server, f"/teams/{team_id}/metrics", key, start=start, end=int(time.time()) + 1).json()
        assert max(p["concurrentSandboxes"] for p in series) >= 1
        assert sum(p["sandboxStartRate"] for p in series) > 0
    peak = _get(server, f"/teams/{team_id}/metrics/max", key, metric="concurrent_sandboxes",
                start=start, end=int(time.time()) + 1).json()
    assert peak["value"] >= 1 and set(peak) == {"timestamp", "timestampUnix", "value"}

    assert httpx.delete(f"{server.url}/api-keys/{created['id']}", headers=key, timeout=30).status_code == 204
    assert _get(server, "/secrets", {"X-API-Key": created["key"]}).status_code == 401
    assert httpx.delete(f"{server.url}/access-tokens/{made.json()['id']}", headers=key, timeout=30).status_code == 204
    assert _get(server, "/teams", bearer).status_code == 401


@pytest.fixture(scope="module")
def own_template(server: Server) -> Iterator[str]:
    """A template of the session team's own: a one-step build on ``base``."""
    name = f"pub-{uuid.uuid4().hex[:8]}"
    Template.build(Template().from_template("base").run_cmd("echo published > /tmp/marker"), name)
    yield name
    httpx.delete(f"{server.url}/templates/{name}", headers={"X-API-Key": server.api_key}, timeout=60)


def test_v2_templates_and_patch_with_the_generated_client(server: Server, own_template: str) -> None:
    client = get_api_client(ConnectionConfig())
    listed = get_v2_templates.sync_detailed(client=client, limit=100)
    assert listed.status_code == 200 and isinstance(listed.parsed, list)
    mine = next(t for t in listed.parsed if own_template in t.aliases)
    assert mine.names[0].endswith(f"/{own_template}") and mine.public is False
    stamps = [t.created_at for t in listed.parsed]
    assert stamps == sorted(stamps, reverse=True)
    patched = patch_v_2_templates_template_id.sync_detailed(mine.template_id, client=client,
                                                           body=TemplateUpdateRequest(public=False))
    assert patched.status_code == 200 and patched.parsed is not None and patched.parsed.names == mine.names


def _cli_env(server: Server, home: Path) -> dict[str, str]:
    """The CLI's environment: no browser opener on its PATH (only ``node``), so ``auth login``
    prints its URL instead of spawning ``xdg-open`` (Debian's chromium brings xdg-utils)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    node = shutil.which("node")
    assert node, "node is not on PATH"
    (bin_dir / "node").symlink_to(node)
    env.update(HOME=str(home), PATH=str(bin_dir), E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url,
               E2B_DOCS_BASE=f"{server.url}/docs", NO_UPDATE_NOTIFIER="1")
    return env


@pytest.mark.skipif(_node_major() < 20, reason="the e2b CLI needs Node >= 20")
def test_cli_auth_login_then_template_publish(server: Server, own_template: str, tmp_path: Path) -> None:
    """`e2b auth login` prints the login URL (no browser here); the test is the browser: it opens
    the page, submits the team's API key and follows the redirect to the CLI's listener."""
    env = _cli_env(server, tmp_path)
    login = subprocess.Popen([str(E2B_CLI), "auth", "login"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(120, login.kill)   # a CLI that never prints its URL fails, not hangs
    watchdog.start()
    try:
        assert login.stdout is not None
        url = None
        for line in login.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+/docs/api/cli\?\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the CLI printed no login URL"
        next_url = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["next"]
        assert _get(server, "/docs/api/cli", {}, next=next_url).status_code == 200
        form = httpx.post(f"{server.url}/docs/api/cli", data={"next": next_url, "apiKey": server.api_key}, timeout=30)
        assert form.status_code == 303, form.text
        callback = httpx.get(form.headers["location"], timeout=30)   # the CLI's own listener
        assert callback.status_code == 302
        assert urllib.parse.urlsplit(callback.headers["location"]).path == "/docs/api/cli"
        out = login.communicate(timeout=60)[0]
        assert login.returncode == 0, out
        assert "Logged in as" in out
    finally:
        watchdog.cancel()
        if login.poll() is None:
            login.kill()
    config = (tmp_path / ".e2b" / "config.json").read_text()
    assert '"projectApiKey": "e2b_' in config

    info = subprocess.run([str(E2B_CLI), "auth", "info"], env=env, capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "@sandlot" in info.stdout
    # `auth configure` refreshes the access token through /oauth/token, then lists the teams
    configure = subprocess.run([str(E2B_CLI), "auth", "configure"], env=env, input="\n", capture_output=True,
                               text=True, timeout=60)
    assert configure.returncode == 0 and "selected" in configure.stdout, configure.stdout + configure.stderr

    published = subprocess.run([str(E2B_CLI), "template", "publish", own_template, "-y"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert published.returncode == 0, published.stdout + published.stderr
    assert "Published as:" in published.stdout and own_template in published.stdout
    key = {"X-API-Key": server.api_key}
    assert _get(server, f"/templates/{own_template}", key).json()["public"] is True
    unpublished = subprocess.run([str(E2B_CLI), "template", "unpublish", own_template, "-y"], env=env,
                                 capture_output=True, text=True, timeout=120)
    assert unpublished.returncode == 0, unpublished.stdout + unpublished.stderr
    assert _get(server, f"/templates/{own_template}", key).json()["public"] is False
    logout = subprocess.run([str(E2B_CLI), "auth", "logout"], env=env, capture_output=True, text=True, timeout=60)
    assert logout.returncode == 0 and not (tmp_path / ".e2b" / "config.json").exists()
