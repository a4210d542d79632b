"""Operator tools (issue 18) against a real `sandlot serve` with an operator token: ``/metrics``
parsed with prometheus_client's parser and checked against the API, X-Request-Id, JSON log lines
with request/team/sandbox ids and no secret anywhere in them, and the CLI (status, sandbox
list/logs/kill/connect, template build progress)."""

from __future__ import annotations

import json
import os
import pty
import re
import secrets
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import Sandbox
from prometheus_client.parser import text_string_to_metric_families

from sandlot import ids
from tests.e2e.server import SANDLOT, Server, free_port, unique_instance, unique_subnet

ADMIN = "op_" + secrets.token_hex(24)
METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-ops"), api_key=ids.new_api_key(),
                 instance=unique_instance("o"), subnet=unique_subnet(),
                 extra_env={"SANDLOT_ADMIN_TOKEN": ADMIN, "SANDLOT_WARM_POOL_SIZE": "1",
                            "SANDLOT_METRICS_LISTEN": f"127.0.0.1:{METRICS_PORT}",
                            "SANDLOT_MCP_GATEWAY_TEMPLATE": "false"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sandboxes(ops_server: Server) -> Iterator[list[Sandbox]]:
    """Two sandboxes of the module: the first running, the second paused (resume durations are
    covered in-process: tests/inprocess/test_operator_metrics.py)."""
    opts = {"api_key": ops_server.api_key, "api_url": ops_server.url, "sandbox_url": ops_server.url}
    made = [Sandbox.create(timeout=1800, metadata={"suite": "ops"}, **opts) for _ in range(2)]
    try:
        assert made[0].commands.run("echo hi").stdout == "hi\n"   # front-door traffic
        made[1].beta_pause()
        yield made
    finally:
        for sbx in made:
            try:
                sbx.kill()
            except Exception:
                pass


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics", headers={"X-Admin-Token": ADMIN}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: dict[Any, float], name: str) -> float:
    return sum(v for (n, _), v in found.items() if n == name)


def api(server: Server, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.url}{path}", headers={"X-API-Key": server.api_key}, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def log_lines(server: Server) -> list[dict[str, Any]]:
    """The server's structured log lines (its stderr is a file: JSON by default)."""
    lines = []
    for raw in (server.workdir / "server.log").read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def cli(server: Server, *args: str, admin: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = server.env() | {"E2B_API_URL": server.url, "E2B_API_KEY": server.api_key}
    env.pop("SANDLOT_ADMIN_TOKEN", None)
    if admin:
        env["SANDLOT_ADMIN_TOKEN"] = ADMIN
    return subprocess.run([str(SANDLOT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_metrics_need_the_operator_token(ops_server: Server) -> None:
    for headers in ({}, {"X-Admin-Token": "wrong"}, {"X-API-Key": ops_server.api_key},
                    {"Authorization": f"Bearer {ops_server.api_key}"}):
        response = httpx.get(f"{ops_server.url}/metrics", headers=headers, timeout=30)
        assert response.status_code == 401, (headers, response.text)
        assert "sandlot_" not in response.text
    assert httpx.get(f"{ops_server.url}/admin/status", timeout=30).status_code == 401
    # the separate listener (SANDLOT_METRICS_LISTEN) serves /metrics without a token, and nothing else
    private = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=30)
    assert private.status_code == 200 and "sandlot_sandboxes" in private.text
    assert httpx.get(f"http://127.0.0.1:{METRICS_PORT}/admin/status", timeout=30).status_code == 404


def test_metrics_match_the_api(ops_server: Server, sandboxes: list[Sandbox]) -> None:
    found = scrape(ops_server)
    running = api(ops_server, "/v2/sandboxes", state="running", limit=100)
    paused = api(ops_server, "/v2/sandboxes", state="paused", limit=100)
    assert value(found, "sandlot_sandboxes", state="running") == len(running) >= 1
    assert value(found, "sandlot_sandboxes", state="paused") == len(paused) >= 1
    assert value(found, "sandlot_sandbox_creates_total") >= 2
    assert value(found, "sandlot_sandbox_create_duration_seconds_count") == value(found, "sandlot_sandbox_creates_total")
    assert value(found, "sandlot_sandbox_pause_duration_seconds_count", outcome="ok") >= 1
    assert value(found, "sandlot_frontdoor_requests_total", path="relay") + value(
        found, "sandlot_frontdoor_requests_total", path="asgi") >= 1
    assert value(found, "sandlot_frontdoor_bytes_total", direction="from_sandbox") > 0
    templates = api(ops_server, "/templates")
    assert total(found, "sandlot_template_builds") == sum(t["buildCount"] for t in templates)
    api_counts = {k: v for k, v in found.items() if k[0] == "sandlot_http_requests_total"}
    assert value(found, "sandlot_http_requests_total", method="POST", route="/v2/sandboxes", status="201") >= 2, api_counts
    assert total(found, "sandlot_node_cpus") == os.cpu_count()
    assert value(found, "sandlot_warm_pool_target") == 1


def test_request_id_and_json_log_lines(ops_server: Server, sandboxes: list[Sandbox]) -> None:
    sbx = sandboxes[0]
    rid = "ops-" + uuid.uuid4().hex
    response = httpx.get(f"{ops_server.url}/sandboxes/{sbx.sandbox_id}", timeout=30,
                         headers={"X-API-Key": ops_server.api_key, "X-Request-Id": rid})
    assert response.status_code == 200 and response.headers["x-request-id"] == rid
    made = httpx.get(f"{ops_server.url}/health", headers={"X-Request-Id": "no spaces allowed"}, timeout=30)
    assert made.headers["x-request-id"] != "no spaces allowed"
    mine = [line for line in log_lines(ops_server) if line.get("request_id") == rid]
    assert mine, "no log line carries the request id"
    line = mine[-1]
    assert line["event"] == "request" and line["route"] == "/sandboxes/{sandbox_id}" and line["status"] == 200
    assert line["sandbox_id"] == sbx.sandbox_id and line["team_id"] and line["level"] == "info"
    created = [line for line in log_lines(ops_server) if line.get("event") == "sandbox created"]
    assert created and all(line.get("request_id") and line.get("team_id") for line in created)


def test_cli_status(ops_server: Server, sandboxes: list[Sandbox]) -> None:
    done = cli(ops_server, "status", "--api-url", ops_server.url, admin=True)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "running" in done.stdout and "Warm pools" in done.stdout
    assert "sandbox slots" in done.stdout and "data-dir disk" in done.stdout
    as_json = json.loads(cli(ops_server, "status", "--json", "--api-url", ops_server.url, admin=True).stdout)
    assert as_json["sandboxes"]["running"] == len(api(ops_server, "/v2/sandboxes", state="running", limit=100))
    refused = cli(ops_server, "status", "--api-url", ops_server.url)
    assert refused.returncode == 2 and "SANDLOT_ADMIN_TOKEN" in refused.stderr


def test_cli_sandbox_list_logs_kill(ops_server: Server, sandboxes: list[Sandbox]) -> None:
    listed = cli(ops_server, "sandbox", "list")
    assert listed.returncode == 0, listed.stderr
    for sbx in sandboxes:
        assert sbx.sandbox_id in listed.stdout
    assert "suite=ops" in listed.stdout and "paused" in listed.stdout
    logs = cli(ops_server, "sandbox", "logs", sandboxes[1].sandbox_id)
    assert logs.returncode == 0 and "sandbox created" in logs.stdout, logs.stderr
    assert cli(ops_server, "sandbox", "kill", sandboxes[1].sandbox_id).returncode == 0
    assert sandboxes[1].sandbox_id not in cli(ops_server, "sandbox", "list").stdout
    missing = cli(ops_server, "sandbox", "kill", sandboxes[1].sandbox_id)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_cli_sandbox_connect_is_a_terminal(ops_server: Server, sandboxes: list[Sandbox]) -> None:
    env = ops_server.env() | {"E2B_API_URL": ops_server.url, "E2B_API_KEY": ops_server.api_key,
                              "E2B_SANDBOX_URL": ops_server.url}
    pid, fd = pty.fork()
    if pid == 0:   # the child: the CLI on a real terminal
        os.execve(str(SANDLOT), [str(SANDLOT), "sandbox", "connect", sandboxes[0].sandbox_id], env)
    seen = b""
    sent_command = sent_exit = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:   # the child exited and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not sent_command and b"$ " in seen:   # the sandbox shell's prompt
                os.write(fd, b"echo $((6*7))-from-the-sandbox\r")
                sent_command = True
            if b"42-from-the-sandbox" in seen and not sent_exit:
                os.write(fd, b"exit 3\r")
                sent_exit = True
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert b"42-from-the-sandbox" in seen, seen[-2000:]
    assert os.waitstatus_to_exitcode(status) == 3   # the shell's exit code comes back


@pytest.mark.slow   # a real template build
def test_template_build_shows_progress_and_is_counted(ops_server: Server, tmp_path: Path) -> None:
    before = scrape(ops_server)
    marker = uuid.uuid4().hex[:8]
    (tmp_path / "Dockerfile").write_text(f"FROM e2bdev/base\nRUN echo {marker} > /tmp/mark\nRUN cat /tmp/mark\n")
    built = cli(ops_server, "template", "build", str(tmp_path), "--name", f"ops-{marker}")
    assert built.returncode == 0, built.stderr
    assert re.search(rf"\[\d+/\d+\] RUN echo {marker} > /tmp/mark", built.stderr), built.stderr   # the build log
    assert re.search(rf"ops-{marker}: ready \(\d+s, (\d+)/\1 steps\)", built.stderr), built.stderr   # the progress view
    assert built.stderr.count("✓") >= 2 and f"Built ops-{marker}" in built.stderr
    after = scrape(ops_server)
    assert value(after, "sandlot_template_builds", status="ready") == value(
        before, "sandlot_template_builds", status="ready") + 1
    assert value(after, "sandlot_template_build_duration_seconds_count", outcome="ok") == value(
        before, "sandlot_template_build_duration_seconds_count", outcome="ok") + 1
    assert total(after, "sandlot_template_builds") == sum(t["buildCount"] for t in api(ops_server, "/templates"))


def test_no_secret_reaches_the_log(ops_server: Server, sandboxes: list[Sandbox]) -> None:
    """Last in the module: every credential the tests and this one used, grepped for in the server log."""
    key = {"X-API-Key": ops_server.api_key}
    secret_value = "sv-" + secrets.token_hex(16)
    hook_secret = "wh-" + secrets.token_hex(16)
    with httpx.Client(base_url=ops_server.url, timeout=30) as client:
        token = client.post("/access-tokens", json={"name": "ops"}, headers=key).json()["token"]
        assert client.get("/teams", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.post("/secrets", json={"name": f"s{uuid.uuid4().hex[:6]}", "value": secret_value},
                           headers=key).status_code == 201
        hook = client.post("/events/webhooks", headers=key, json={
            "name": "ops", "url": "https://example.invalid/hook", "signatureSecret": hook_secret, "events": []})
        assert hook.status_code in (201, 400), hook.text
        wrong_key = ids.new_api_key()
        assert client.get("/sandboxes", headers={"X-API-Key": wrong_key}).status_code == 401
        envd_token = sandboxes[0]._envd_access_token
        assert envd_token
        # an envd token sent where it does not belong, and the operator token to a team route
        client.get(f"/sandboxes/{sandboxes[0].sandbox_id}", headers={**key, "X-Access-Token": envd_token})
        client.get("/sandboxes", headers={"X-Admin-Token": ADMIN})
    sandboxes[0].commands.run("true")   # envd traffic with the token, through the front door
    text = (ops_server.workdir / "server.log").read_text(errors="replace")
    for name, secret in {"API key": ops_server.api_key, "access token": token, "secret value": secret_value,
                         "webhook signing secret": hook_secret, "wrong API key": wrong_key,
                         "envd access token": envd_token, "operator token": ADMIN}.items():
        assert secret not in text, f"the {name} is in the server log"
    assert log_lines(ops_server)   # the log is there and structured: the check above read something
