"""``Sandbox.create(mcp=...)`` with the unmodified E2B SDK against Sandlot's ``mcp-gateway``.

The session server builds the template at start-up (its npm and PyPI servers are
preinstalled); the tests wait for that build, start a gateway with two real servers from
packages (filesystem from npm, time from PyPI), and drive it with the official ``mcp``
client through the front door at ``get_mcp_url()`` with ``get_mcp_token()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import httpx2
import pytest
from e2b import Sandbox, SandboxException
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.server import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TEMPLATE = "mcp-gateway"
BUILD_WAIT_S = 900
NOTE = "written by the test through envd, read back through the gateway"


@pytest.fixture(scope="module")
def template_ready(server: Server) -> None:
    """Waits (bounded) for the start-up build of ``mcp-gateway``."""
    headers = {"X-API-Key": server.api_key}
    template = httpx.get(f"{server.url}/templates/{TEMPLATE}", headers=headers, timeout=10).json()
    assert template["public"] is True
    build_id = template["builds"][0]["buildID"]
    logs: list[str] = []
    deadline = time.monotonic() + BUILD_WAIT_S
    while True:
        status = httpx.get(f"{server.url}/templates/{template['templateID']}/builds/{build_id}/status",
                           params={"logsOffset": len(logs)}, headers=headers, timeout=10).json()
        logs += status["logs"]
        if status["status"] == "ready":
            return
        assert status["status"] != "error", f"{status.get('reason')}\n" + "\n".join(map(str, logs[-40:]))
        assert time.monotonic() < deadline, "the mcp-gateway build did not finish in time"
        time.sleep(2)


@pytest.fixture(scope="module")
def gateway(server: Server, template_ready: None) -> Iterator[Sandbox]:
    sbx = Sandbox.create(mcp={"filesystem": {"paths": ["/home/user"]}, "time": {}}, timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


def _front_door(server: Server, sbx: Sandbox, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """``get_mcp_url()`` names ``50005-<id>.<domain>``: the request goes to the test server
    with that Host (no wildcard DNS here), as test_ports.py reaches user ports."""
    url = urlsplit(sbx.get_mcp_url())
    return f"{server.url}{url.path}", {"Host": url.netloc, **headers}


async def _use_gateway(server: Server, sbx: Sandbox, token: str) -> dict[str, Any]:
    url, headers = _front_door(server, sbx, {"Authorization": f"Bearer {token}"})
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = (await client.list_tools()).tools
            read = await client.call_tool("read_text_file", {"path": "/home/user/note.txt"})
            now = await client.call_tool("get_current_time", {"timezone": "UTC"})
            missing = await client.call_tool("read_text_file", {"path": "/etc/shadow"})
        # a client of the handshake era (initialize, protocol 2025-xx), as most deployed ones are
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as legacy:
            legacy_tools = (await legacy.list_tools()).tools
    return {"tools": {t.name for t in tools}, "read": read, "now": now, "missing": missing,
            "legacy_tools": {t.name for t in legacy_tools}}


def test_sdk_urls_and_token(gateway: Sandbox) -> None:
    assert gateway.get_mcp_url() == f"https://{gateway.get_host(50005)}/mcp"
    token = gateway.get_mcp_token()
    assert token
    again = Sandbox.connect(gateway.sandbox_id)   # no cached token: read from /etc/mcp-gateway/.token as root
    assert again.get_mcp_token() == token
    modes = gateway.commands.run("stat -c '%a %U' /etc/mcp-gateway /etc/mcp-gateway/.token /etc/mcp-gateway/config.json",
                                 user="root").stdout.split("\n")
    assert modes[:3] == ["700 root", "600 root", "600 root"]   # the config holds the servers' API keys
    refused = gateway.commands.run("cat /etc/mcp-gateway/.token || true", user="user")
    assert token not in refused.stdout and "Permission denied" in refused.stderr


def test_tools_of_two_package_servers_listed_and_called(server: Server, gateway: Sandbox) -> None:
    gateway.files.write("/home/user/note.txt", NOTE)
    token = gateway.get_mcp_token()
    assert token is not None
    result = anyio.run(_use_gateway, server, gateway, token)
    assert {"read_text_file", "list_directory", "write_file"} <= result["tools"]     # filesystem (npm)
    assert {"get_current_time", "convert_time"} <= result["tools"]                   # time (PyPI)
    assert result["legacy_tools"] == result["tools"]
    assert not result["read"].is_error and NOTE in result["read"].content[0].text
    assert not result["now"].is_error and "UTC" in result["now"].content[0].text
    # the filesystem server's own rule: only the configured paths
    assert result["missing"].is_error and "outside allowed directories" in result["missing"].content[0].text


def test_refused_without_the_token(server: Server, gateway: Sandbox) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": gateway.get_mcp_token() or ""}):
        url, headers = _front_door(server, gateway, {"Accept": "application/json, text/event-stream", **auth})
        response = httpx.post(url, json=ping, headers=headers, timeout=10)
        assert response.status_code == 401, (auth, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("config", "reason"), [
    ({"airtable": {"airtableApiKey": "k", "nodeenv": "x"}}, "'airtable' is not available on this Sandlot server"),
    ({"puppeteer": {}}, "'puppeteer' is not available on this Sandlot server: it needs a Chromium build"),
    ({"filesystem": {"paths": ["/no/such/dir"]}}, "MCP server 'filesystem' did not start: .*/no/such/dir"),
    ({"time": {}, "github/e2b-dev/no-such-repo": {"run_cmd": "node index.js"}},
     "cloning https://github.com/e2b-dev/no-such-repo"),
], ids=["not-in-catalogue", "unavailable", "server-error", "github-unreachable"])
def test_a_server_that_cannot_start_is_the_sdk_failure(server: Server, template_ready: None,
                                                       config: dict[str, Any], reason: str) -> None:
    with pytest.raises(SandboxException, match=f"(?s)^Failed to start MCP gateway: .*{reason}"):
        Sandbox.create(mcp=config, timeout=120)
