"""Credentials before reachability (issue 10).

* A warm-pool sandbox (booted ahead, no store row, not claimed by any team) is never
  routed by the front door, and its envd refuses every request without its token — so
  nobody can ``POST /init`` their own token into it before a team claims it.
* The code interpreter's port (49999) runs code: as in E2B, ``/execute`` needs the
  sandbox's envd access token (``X-Access-Token``); knowing the sandbox id is not enough.
  A stand-in server on 49999 records every request it gets: refused ones must never
  arrive, and the SDK's own calls (context management without the token, ``/execute``
  with it) still do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.e2e.server import data_dir as default_data_dir
from tests.e2e.server import Server
from tests.security.test_frontdoor import WS_UPGRADE, build, raw_status

ENVD_PORT, CI_PORT = 49983, 49999

RECORDER = f"""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _any(self):
        with open("/tmp/ci-hits", "a") as f:
            f.write(json.dumps([self.command, self.path, self.headers.get("X-Access-Token")]) + "\\n")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"recorded"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_DELETE = do_PUT = _any
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", {CI_PORT}), H).serve_forever()
"""


def _data_dir(server: Server) -> Path:
    return Path(server.env().get("SANDLOT_DATA_DIR") or default_data_dir())


def _pooled(server: Server) -> dict[str, str]:
    """Sandbox id → IP of this server's containers that no team owns (the warm pool), from
    the runtime's ``runtime.json`` files under the data dir."""
    root = _data_dir(server) / "runtime" / server.instance / "sandboxes"
    owned = {s.sandbox_id for s in Sandbox.list().next_items()}
    pooled = {}
    for info in root.glob("i*/runtime.json"):     # template build sandboxes are "b…"
        if info.parent.name in owned:
            continue
        try:
            pooled[info.parent.name] = json.loads(info.read_text())["ip"]
        except (OSError, ValueError, KeyError):
            continue
    return pooled


def _healthy(ip: str) -> bool:
    try:
        return httpx.get(f"http://{ip}:{ENVD_PORT}/health", timeout=2).status_code == 204
    except httpx.HTTPError:
        return False


def test_warm_pool_sandbox_is_unroutable_and_its_envd_needs_a_token(server: Server, sandbox: Sandbox) -> None:
    # the create behind the `sandbox` fixture made the pool (re)fill for the base template
    deadline = time.monotonic() + 120
    pooled: dict[str, str] = {}
    while time.monotonic() < deadline:
        pooled = {sid: ip for sid, ip in _pooled(server).items() if _healthy(ip)}
        if pooled:
            break
        time.sleep(0.5)
    assert pooled, f"no warm-pool sandbox came up:\n{server.log_tail()}"
    for sandbox_id, ip in pooled.items():
        # not routable through the front door, on envd's port or any other
        for port in (ENVD_PORT, 8000, CI_PORT):
            routed = httpx.get(f"{server.url}/health", headers={"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port)})
            assert routed.status_code == 502 and routed.json()["message"] == "The sandbox was not found"
        # its envd, straight from the host, refuses anything without the token
        base = f"http://{ip}:{ENVD_PORT}"
        assert httpx.get(f"{base}/envs").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/files", params={"path": "/etc/hostname", "username": "root"}).status_code == 401
        listed = httpx.post(f"{base}/process.Process/List", content=b"{}",
                            headers={"Content-Type": "application/json", "Connect-Protocol-Version": "1"})
        assert listed.status_code == 401
        # the takeover: set our own token before a team claims it
        for token_header in ({}, {"X-Access-Token": ""}, {"X-Access-Token": "guess"}):
            takeover = httpx.post(f"{base}/init", json={"accessToken": "attacker", "envVars": {"PWNED": "1"}},
                                  headers=token_header)
            assert takeover.status_code == 401
        assert httpx.get(f"{base}/envs", headers={"X-Access-Token": "attacker"}).status_code == 401
    # the pool still hands out working sandboxes, with their own identity and no planted env
    claimed = Sandbox.create(timeout=60)
    try:
        result = claimed.commands.run("echo ${PWNED:-clean}")
        assert result.stdout == "clean\n"
    finally:
        claimed.kill()


@pytest.fixture(scope="module")
def ci_stand_in(server: Server) -> Sandbox:
    sbx = Sandbox.create(timeout=300)
    sbx.files.write("/home/user/recorder.py", RECORDER)
    sbx.commands.run("python3 /home/user/recorder.py", background=True)
    sbx.commands.run(f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{CI_PORT}) 2>/dev/null && exit 0; "
                     "sleep 0.1; done; exit 1", timeout=30)
    yield sbx
    sbx.kill()


def _hits(sbx: Sandbox) -> list[list]:
    text = sbx.commands.run("cat /tmp/ci-hits 2>/dev/null; true").stdout
    return [json.loads(line) for line in text.splitlines() if line]


def test_jupyter_port_needs_the_envd_token(ci_stand_in: Sandbox, server: Server) -> None:
    sbx, own = ci_stand_in, ci_stand_in.sandbox_id
    token = sbx._envd_access_token
    assert token
    routing = [f"E2b-Sandbox-Id: {own}".encode(), f"E2b-Sandbox-Port: {CI_PORT}".encode()]
    body = [b"Content-Type: application/json", b"Content-Length: 11"]
    refused = [
        build(b"/execute", routing + body, method=b"POST"),
        build(b"/execute/", routing + body, method=b"POST"),
        build(b"/execute?x=1", routing + body, method=b"POST"),
        build(b"/%65xecute", routing + body, method=b"POST"),
        build(b"/EXECUTE", routing + body, method=b"POST"),
        build(b"/contexts/../execute", routing + body, method=b"POST"),
        build(b"/contexts/abc/restart/../../../execute", routing + body, method=b"POST"),
        build(b"/contexts%2F..%2Fexecute", routing + body, method=b"POST"),
        build(b"/execute", routing + body + [b"X-Access-Token: wrong"], method=b"POST"),
        build(b"/execute", routing + body + [b"X-Access-Token: " + token.encode(), b"X-Access-Token: wrong"],
              method=b"POST"),
        build(b"/execute", routing + body + [b"X-Access-Token: wrong", b"X-Access-Token: " + token.encode()],
              method=b"POST"),
        build(b"/api/kernels", routing),
        build(b"/contexts", routing + [b"X-Access-Token: wrong"]),
        build(b"/", routing + WS_UPGRADE + [b"Connection: Upgrade"]),
    ]
    statuses = [raw_status(server, request + (b'{"code":""}' if b"Content-Length: 11" in request else b""))
                for request in refused]
    assert all(status is not None and 400 <= status < 500 for status in statuses), list(zip(refused, statuses, strict=True))
    assert _hits(sbx) == []        # none of them reached the sandbox

    # the SDK's calls still arrive: context management without the token, /execute with it
    headers = {"E2b-Sandbox-Id": own, "E2b-Sandbox-Port": str(CI_PORT)}
    url = server.url
    assert httpx.get(f"{url}/health", headers=headers).status_code == 200
    assert httpx.get(f"{url}/contexts", headers=headers).status_code == 200
    assert httpx.post(f"{url}/contexts", headers=headers, json={"language": "python"}).status_code == 200
    assert httpx.post(f"{url}/contexts/ctx-1_A/restart", headers=headers).status_code == 200
    assert httpx.delete(f"{url}/contexts/ctx-1_A", headers=headers).status_code == 200
    assert httpx.post(f"{url}/execute", headers={**headers, "X-Access-Token": token}, json={"code": "1"}).status_code == 200
    assert [hit[:2] for hit in _hits(sbx)] == [
        ["GET", "/health"], ["GET", "/contexts"], ["POST", "/contexts"], ["POST", "/contexts/ctx-1_A/restart"],
        ["DELETE", "/contexts/ctx-1_A"], ["POST", "/execute"],
    ]


def test_envd_port_keeps_its_own_token_check(ci_stand_in: Sandbox, server: Server) -> None:
    headers = {"E2b-Sandbox-Id": ci_stand_in.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    assert httpx.get(f"{server.url}/envs", headers=headers).status_code == 401
    assert httpx.post(f"{server.url}/init", headers=headers, json={"accessToken": "attacker"}).status_code == 401
    ok = httpx.get(f"{server.url}/envs", headers={**headers, "X-Access-Token": ci_stand_in._envd_access_token})
    assert ok.status_code == 200
