"""The web dashboard (issue 18) in Debian's headless Chromium, driven by Playwright (no browser
download: ``executable_path=/usr/bin/chromium``), against a real ``sandlot serve`` whose
sandboxes and builds come from the unmodified SDK.

Screenshots of each page land in the test's tmp dir; with ``SANDLOT_DASHBOARD_SCREENSHOTS=DIR``
they are also copied there (how docs/dashboard/*.png are made).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandlot import ids
from tests.e2e.server import SANDLOT, Server, sdk_pointed_at

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make deps)")
VENDOR = Path(__file__).resolve().parents[2] / "sandlot" / "dashboard" / "static" / "vendor"
TIMEOUT_MS = 60_000


class Shots:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.extra = os.environ.get("SANDLOT_DASHBOARD_SCREENSHOTS")

    def take(self, page: Any, name: str) -> Path:
        path = self.root / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        if self.extra:
            Path(self.extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.extra) / path.name)
        return path


@pytest.fixture(scope="module")
def admin_token() -> str:
    return "adm_" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory, admin_token: str) -> Iterator[Server]:
    if not (VENDOR / "htmx.min.js").is_file():
        node = shutil.which("node")
        major = subprocess.run([node, "-p", "process.versions.node.split('.')[0]"], capture_output=True,
                               text=True).stdout.strip() if node else ""
        if not major.isdigit() or int(major) < 20:
            pytest.skip("no Node >= 20 to vendor the dashboard's front-end files (make dashboard-assets)")
        pytest.fail("the dashboard's front-end files are missing: run `make dashboard-assets` (part of make setup)")
    srv = Server(workdir=tmp_path_factory.mktemp("dash"), api_key=ids.new_api_key(),
                 extra_env={"SANDLOT_ADMIN_TOKEN": admin_token})
    srv.start()
    LOG_START.append((srv.workdir / "server.log").stat().st_size)   # after `serve`'s banner, which prints its key
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("dashboard-screenshots"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


URLS: list[str] = []
"""Every URL the browsers asked for (checked for keys at the end)."""
SECRETS: list[str] = []
"""Keys made during the module (checked at the end too)."""
LOG_START: list[int] = []


def sign_in(browser: Any, server: Server, secret: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("request", lambda request: URLS.append(request.url))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{server.url}/dashboard/")
    assert page.url.endswith("/dashboard/login")
    page.fill("#api_key", secret)
    page.click("#sign-in")
    page.wait_for_load_state()
    assert not page.url.endswith("/login"), page.content()[:2000]
    return page


@pytest.fixture(scope="module")
def page(browser: Any, dash: Server) -> Iterator[Any]:
    signed_in = sign_in(browser, dash, dash.api_key)
    yield signed_in
    signed_in.context.close()


@pytest.fixture(scope="module")
def sbx(dash: Server) -> Iterator[Any]:
    from e2b import Sandbox

    sandbox = Sandbox.create(timeout=900, metadata={"purpose": "dashboard-test"})
    yield sandbox
    sandbox.kill()


@pytest.fixture(scope="module")
def other_key(dash: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", "dash-other", "--name", "t"], env=dash.env(),
                         check=True, capture_output=True, text=True)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("e2b_")
    return key


def terminal_text(page: Any) -> str:
    return str(page.evaluate("""() => { const b = window.sandlotTerminal.buffer.active; const out = [];
        for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true)); return out.join('\\n'); }"""))


# --- sign-in, the list, the sandbox page ------------------------------------------------------


def test_sign_in_and_the_sdk_sandbox_appears(page: Any, dash: Server, sbx: Any, shots: Shots) -> None:
    cookies = page.context.cookies()
    session = [c for c in cookies if c["name"] == "sandlot_dash"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert all(dash.api_key not in c["value"] for c in cookies)
    page.goto(f"{dash.url}/dashboard/sandboxes")
    row = page.locator(f'tr.sandbox-row[data-id="{sbx.sandbox_id}"]')
    row.wait_for()
    assert "running" in row.inner_text() and "purpose=dashboard-test" in row.inner_text()
    shots.take(page, "sandboxes")
    page.goto(f"{dash.url}/dashboard/sandboxes?state=running&metadata=purpose%3Ddashboard-test")
    page.locator(f'tr.sandbox-row[data-id="{sbx.sandbox_id}"]').wait_for()
    page.goto(f"{dash.url}/dashboard/sandboxes?metadata=purpose%3Dsomething-else")
    page.locator("td.empty").wait_for()
    assert page.locator(f'tr.sandbox-row[data-id="{sbx.sandbox_id}"]').count() == 0
    page.goto(f"{dash.url}/dashboard/sandboxes?state=paused")
    page.locator("td.empty").wait_for()


def test_terminal_runs_a_command(page: Any, dash: Server, sbx: Any, shots: Shots) -> None:
    page.goto(f"{dash.url}/dashboard/sandboxes/{sbx.sandbox_id}")
    assert page.inner_text("#sandbox-state") == "running"
    page.wait_for_function("() => Number(document.querySelector('[data-metrics]').dataset.points || 0) > 0")
    page.click("#open-terminal")
    page.wait_for_function("() => window.sandlotTerminal !== undefined")
    page.wait_for_function("() => { const b = window.sandlotTerminal.buffer.active; "
                           "for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true).includes('$')) "
                           "return true; return false; }")
    page.locator("#terminal .xterm-helper-textarea").focus()
    page.keyboard.type("echo dash-$((6*7))-ok; whoami\n")
    page.wait_for_function("() => { const b = window.sandlotTerminal.buffer.active; "
                           "for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true)"
                           ".includes('dash-42-ok')) return true; return false; }")
    text = terminal_text(page)
    assert "dash-42-ok" in text and re.search(r"^user\s*$", text, re.M), text
    shots.take(page, "sandbox")


def test_upload_and_download_a_file(page: Any, dash: Server, sbx: Any, tmp_path: Path, shots: Shots) -> None:
    content = f"dashboard upload {uuid.uuid4().hex}\n".encode()
    name = f"dash-{uuid.uuid4().hex[:8]}.txt"
    local = tmp_path / name
    local.write_bytes(content)
    page.goto(f"{dash.url}/dashboard/sandboxes/{sbx.sandbox_id}")
    page.locator("#current-dir").wait_for()
    assert page.inner_text("#current-dir") == "/home/user"
    page.set_input_files("#upload-file", str(local))
    page.click("#upload-button")
    page.wait_for_load_state()
    assert "Uploaded" in page.inner_text("#flash")
    link = page.locator(f'a.download[href$="{name}"]')
    link.wait_for()
    assert sbx.files.read(f"/home/user/{name}", format="bytes") == content   # it is in the sandbox
    with page.expect_download() as info:
        link.click()
    downloaded = tmp_path / "downloaded"
    info.value.save_as(str(downloaded))
    assert downloaded.read_bytes() == content
    shots.take(page, "files")
    sbx.files.make_dir("/home/user/dash-subdir")
    page.goto(f"{dash.url}/dashboard/sandboxes/{sbx.sandbox_id}")
    page.click("text=dash-subdir/")
    page.wait_for_function("() => document.querySelector('#current-dir').textContent === '/home/user/dash-subdir'")


def test_buttons_extend_pause_resume_kill(page: Any, dash: Server) -> None:
    from e2b import Sandbox

    other = Sandbox.create(timeout=300)
    try:
        page.goto(f"{dash.url}/dashboard/sandboxes/{other.sandbox_id}")
        page.fill('input[name="seconds"]', "1200")
        page.click("#btn-extend")
        assert "Timeout set to 1200s" in page.inner_text("#flash")
        left = (other.get_info().end_at - other.get_info().started_at).total_seconds()
        assert left > 900
        page.click("#btn-pause")
        assert page.inner_text("#sandbox-state") == "paused", page.inner_text("main")[:500]
        assert other.get_info().state.value == "paused"
        page.click("#btn-resume")
        assert page.inner_text("#sandbox-state") == "running", page.inner_text("main")[:500]
        assert other.is_running()
        page.click("#btn-kill")
        assert page.url.endswith("/dashboard/sandboxes")
        assert "killed" in page.inner_text("#flash")
        assert other.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]
    finally:
        other.kill()


# --- templates and builds ---------------------------------------------------------------------


@pytest.mark.slow
def test_build_logs_stream(page: Any, dash: Server, shots: Shots) -> None:
    from e2b import Template

    nonce = uuid.uuid4().hex[:8]
    template = Template().from_template("base").run_cmd(
        f"echo dash-first-$((40+2))-{nonce}; sleep 6; echo dash-second-$((40+3))-{nonce}")   # output ≠ command text
    first, second = f"dash-first-42-{nonce}", f"dash-second-43-{nonce}"
    info = Template.build_in_background(template, f"dash-{nonce}", cpu_count=1, memory_mb=512)
    page.goto(f"{dash.url}/dashboard/templates/{info.template_id}/builds/{info.build_id}")
    page.wait_for_function(f"() => document.querySelector('#build-log').textContent.includes('{first}')",
                           timeout=300_000)
    # the first line is on screen while the build still runs: the poller is there, the last line not yet
    seen_running = page.locator("#build-poller").count() == 1 and second not in page.inner_text("#build-log")
    page.locator('#build-status[data-status="ready"]').wait_for(timeout=300_000)
    log = page.inner_text("#build-log")
    assert second in log and log.index(first) < log.index(second)
    assert seen_running, "the page should show the first step's output before the build ends"
    shots.take(page, "build")
    page.goto(f"{dash.url}/dashboard/templates")
    assert f"dash-{nonce}" in page.inner_text("#templates")
    shots.take(page, "templates")
    page.goto(f"{dash.url}/dashboard/templates/{info.template_id}")
    assert "ready" in page.inner_text("#builds")
    page.click("#btn-delete-template")
    assert page.url.endswith("/dashboard/templates") and "deleted" in page.inner_text("#flash")
    assert f"dash-{nonce}" not in page.inner_text("#templates")


# --- team -------------------------------------------------------------------------------------


def test_create_and_revoke_a_key(page: Any, dash: Server, shots: Shots) -> None:
    page.goto(f"{dash.url}/dashboard/team")
    page.fill("#new-key-name", "dash-temporary")
    page.click("#create-key")
    new_key = page.inner_text("#new-key").strip()
    assert re.fullmatch(r"e2b_[0-9a-f]{40}", new_key)
    SECRETS.append(new_key)
    assert new_key not in page.url
    assert httpx.get(f"{dash.url}/sandboxes", headers={"X-API-Key": new_key}).status_code == 200
    page.wait_for_function("() => Number(document.querySelector('[data-usage]').dataset.points || 0) > 0")
    assert float(page.inner_text("#hours-24h")) > 0   # the module's sandboxes have run
    assert "concurrent_sandboxes" in page.inner_text("#quotas")
    page.reload()
    assert page.locator("#new-key").count() == 0   # shown once
    page.wait_for_function("() => Number(document.querySelector('[data-usage]').dataset.points || 0) > 0")
    shots.take(page, "team")
    row = page.locator("tr.key", has_text="dash-temporary")
    row.locator("button.revoke").click()
    assert "revoked" in page.inner_text("#flash")
    assert page.locator("tr.key", has_text="dash-temporary").count() == 0
    assert httpx.get(f"{dash.url}/sandboxes", headers={"X-API-Key": new_key}).status_code == 401


def test_revoking_the_sign_in_key_ends_its_sessions(browser: Any, dash: Server) -> None:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--name", "dash-session"], env=dash.env(),
                         check=True, capture_output=True, text=True)
    key = out.stdout.strip().splitlines()[-1]
    SECRETS.append(key)
    signed_in = sign_in(browser, dash, key)
    try:
        signed_in.goto(f"{dash.url}/dashboard/team")
        signed_in.locator("tr.key", has_text="dash-session").locator("button.revoke").click()
        assert signed_in.url.endswith("/dashboard/login")
    finally:
        signed_in.context.close()


# --- isolation, CSRF, operator, secrets -------------------------------------------------------


def test_another_team_gets_404(browser: Any, dash: Server, sbx: Any, other_key: str) -> None:
    other = sign_in(browser, dash, other_key)
    try:
        for path in ("", "/metrics.json", "/files?path=/home/user", "/files/download?path=/etc/hostname"):
            response = other.goto(f"{dash.url}/dashboard/sandboxes/{sbx.sandbox_id}{path}")
            assert response.status == 404, path
        other.goto(f"{dash.url}/dashboard/sandboxes")
        other.locator("td.empty").wait_for()
        assert sbx.sandbox_id not in other.inner_text("main")
        post = other.request.post(f"{dash.url}/dashboard/sandboxes/{sbx.sandbox_id}/kill",
                                  form={"csrf": other.get_attribute('meta[name="csrf-token"]', "content")},
                                  max_redirects=0)
        assert post.status == 404
        code = other.evaluate("""(url) => new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onopen = () => ws.send(JSON.stringify({csrf: document.querySelector('meta[name=csrf-token]').content}));
            ws.onclose = (e) => resolve(e.code); })""",
                              f"ws://127.0.0.1:{dash.port}/dashboard/sandboxes/{sbx.sandbox_id}/terminal")
        assert code == 4404
    finally:
        other.context.close()
    assert sbx.is_running()


def test_state_changes_need_the_csrf_token(page: Any, dash: Server, sbx: Any) -> None:
    page.goto(f"{dash.url}/dashboard/sandboxes")
    for form in ({}, {"csrf": "wrong"}):
        response = page.request.post(f"{dash.url}/dashboard/sandboxes/{sbx.sandbox_id}/kill", form=form,
                                     max_redirects=0)
        assert response.status == 403, response.text()
        assert page.request.post(f"{dash.url}/dashboard/team/keys", form=form | {"name": "x"},
                                 max_redirects=0).status == 403
        assert page.request.post(f"{dash.url}/dashboard/logout", form=form, max_redirects=0).status == 403
    assert sbx.is_running()
    # a terminal without the token is refused too
    code = page.evaluate("""(url) => new Promise((resolve) => {
        const ws = new WebSocket(url); ws.onopen = () => ws.send(JSON.stringify({csrf: 'nope'}));
        ws.onclose = (e) => resolve(e.code); })""", f"ws://127.0.0.1:{dash.port}/dashboard/sandboxes/{sbx.sandbox_id}/terminal")
    assert code == 4403
    # and the sign-in form's own token
    bare = httpx.post(f"{dash.url}/dashboard/login", data={"api_key": dash.api_key})
    assert bare.status_code == 403 and "sandlot_dash" not in bare.cookies
    page.goto(f"{dash.url}/dashboard/sandboxes")
    assert page.url.endswith("/dashboard/sandboxes")   # still signed in


def test_operator_page(browser: Any, dash: Server, page: Any, admin_token: str, shots: Shots) -> None:
    assert page.goto(f"{dash.url}/dashboard/operator").status == 403   # a team is no operator
    operator = sign_in(browser, dash, admin_token)
    try:
        assert operator.url.endswith("/dashboard/operator")
        assert operator.inner_text("#server-status") in ("ok", "degraded")
        assert "running" in operator.inner_text("#by-state")
        assert "free of" in operator.inner_text("#disk")
        operator.locator("#pools").wait_for()
        shots.take(operator, "operator")
        operator.goto(f"{dash.url}/dashboard/sandboxes")
        assert operator.url.endswith("/dashboard/operator")   # no team pages for the operator
    finally:
        operator.context.close()


def test_sign_in_page_and_security_headers(browser: Any, dash: Server, shots: Shots) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 700})
    try:
        login = context.new_page()
        response = login.goto(f"{dash.url}/dashboard/login")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
        login.fill("#api_key", "e2b_" + "0" * 40)
        login.click("#sign-in")
        assert "Unknown API key" in login.inner_text("main")
        shots.take(login, "login")
    finally:
        context.close()


def test_no_key_in_urls_cookies_or_logs(dash: Server, other_key: str, admin_token: str) -> None:
    """Last in the module: everything above signed in with these keys."""
    secrets_used = [dash.api_key, other_key, admin_token, *SECRETS]
    assert URLS, "the browsers made requests"
    for url in URLS:
        assert not any(s in url for s in secrets_used), url
    log = (dash.workdir / "server.log").read_bytes()[LOG_START[0]:].decode(errors="replace")
    assert "dashboard terminal closed" in log   # the log covers the dashboard's sessions
    for secret in secrets_used:
        assert secret not in log
