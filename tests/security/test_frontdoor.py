"""The front door is not an open proxy (issue 10).

A request line such as ``GET @127.0.0.1:8765/`` with the caller's own sandbox in the
routing headers used to reach a service on the *host's* loopback: the upstream URL was
``http://{ip}:{port}{raw_path}`` and ``@`` turned the sandbox IP into userinfo. Here the
request line, Host and both routing headers are fuzzed with raw sockets (h11 accepts odd
bytes a client library would never send), for plain HTTP, the WebSocket upgrade and the
Prime gateway. The canary is a loopback-only TCP service on the host that records every
connection: it must never be hit, and every hostile request must get a 4xx. Next to the
attacks, the legitimate features are checked: query strings, ``%2F`` and unicode paths,
WebSockets, host-only cookies.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from e2b import Sandbox
from websockets.sync.client import connect as ws_connect

from tests.e2e.server import Server

HTTP_PORT, WS_PORT, REDIRECT_PORT, ENVD_PORT = 8000, 8765, 8766, 49983
SHARED_DOMAIN = "sandbox.example.com"

APP = f"""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/cookie"):
            body = b"cookie"
            self.send_response(200)
            self.send_header("Set-Cookie", "a=b; Domain={SHARED_DOMAIN}; Path=/")
            self.send_header("Set-Cookie", "c=d; Path=/; domain=.8000-other.{SHARED_DOMAIN}; HttpOnly")
            self.send_header("Connection", "X-Hop")
            self.send_header("X-Hop", "secret")
            self.send_header("Alt-Svc", 'h2="evil.example:443"')
        else:
            body = json.dumps({{"path": self.path, "host": self.headers.get("Host")}}).encode()
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", {HTTP_PORT}), H).serve_forever()
"""

WS_APP = f"""
import asyncio, json, sys
sys.path.insert(0, "/home/user/lib")
from websockets.asyncio.server import serve
async def echo(ws):
    if ws.request.path == "/host":
        await ws.send(json.dumps(ws.request.headers.get_all("Host")))
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "0.0.0.0", {WS_PORT}):
        await asyncio.Future()
asyncio.run(main())
"""


REDIRECTOR = f"""
import socket, sys
target = sys.argv[1]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", {REDIRECT_PORT}))
server.listen(16)
while True:
    conn, _ = server.accept()
    conn.recv(65536)
    conn.sendall(("HTTP/1.1 302 Found\\r\\nLocation: " + target + "\\r\\nContent-Length: 0\\r\\n"
                  "Connection: close\\r\\n\\r\\n").encode())
    conn.close()
"""
"""Answers every request, WebSocket upgrades included, with a redirect to the host's canary."""


class Canary:
    """A loopback-only TCP service on the host that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.hits: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.hits.append(peer)
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    c = Canary()
    # the canary works: a direct hit is recorded (then forgotten)
    assert httpx.get(f"http://127.0.0.1:{c.port}/").text == "canary"
    assert len(c.hits) == 1
    c.hits.clear()
    yield c
    c.close()


def wait_port(sbx: Sandbox, port: int) -> None:
    sbx.commands.run(f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && exit 0; sleep 0.1; done; "
                     "exit 1", timeout=30)


@pytest.fixture(scope="module")
def served(server: Server, canary: Canary) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=300)
    try:
        package = Path(websockets.__file__).parent
        sbx.files.write_files([
            {"path": f"/home/user/lib/websockets/{p.relative_to(package)}", "data": p.read_bytes()}
            for p in package.rglob("*.py")
        ])
        sbx.files.write("/home/user/app.py", APP)
        sbx.files.write("/home/user/ws.py", WS_APP)
        sbx.files.write("/home/user/redirector.py", REDIRECTOR)
        sbx.commands.run("python3 /home/user/app.py", background=True)
        sbx.commands.run("python3 /home/user/ws.py", background=True)
        sbx.commands.run(f"python3 /home/user/redirector.py ws://127.0.0.1:{canary.port}/", background=True)
        for port in (HTTP_PORT, WS_PORT, REDIRECT_PORT):
            wait_port(sbx, port)
        yield sbx
    finally:
        sbx.kill()


def raw_status(server: Server, request: bytes) -> int | None:
    """Send bytes as they are; the status code of the answer (``None``: no HTTP answer)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    parts = data.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])


def build(target: bytes, headers: list[bytes], *, method: bytes = b"GET", host: bytes | None = b"127.0.0.1") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += headers
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def routing(sandbox_id: str, port: int | bytes) -> list[bytes]:
    port_bytes = port if isinstance(port, bytes) else str(port).encode()
    return [b"E2b-Sandbox-Id: " + sandbox_id.encode(), b"E2b-Sandbox-Port: " + port_bytes]


WS_UPGRADE = [b"Upgrade: websocket", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]


def hostile_targets(c: int) -> list[bytes]:
    at = f"127.0.0.1:{c}".encode()
    return [
        b"@" + at + b"/", b"@" + at + b"/health", b"@" + at, b"http://" + at + b"/", b"HTTP://" + at + b"/x",
        b"//" + at + b"/", b"///" + at + b"/", b"/\\" + at + b"/", b"\\\\" + at + b"/", b"*", at, b"?@" + at + b"/",
        b"/#@" + at + b"/", b":" + str(c).encode() + b"@127.0.0.1/", b"/\x00@" + at + b"/", b"/\xc0@" + at + b"/",
        b"/ @" + at + b"/", b"/\r\nHost: " + at, b"/\t@" + at + b"/", b"ws://" + at + b"/",
    ]


def hostile_ports(c: int) -> list[bytes]:
    return [
        f"1@127.0.0.1:{c}".encode(), f"{c}@127.0.0.1".encode(), f"49983@127.0.0.1:{c}".encode(), b"80/../",
        f"{c}/".encode(), b"-1", b"0", b"00", b"65536", b"99999999999999999999", b"+80", b"0x50", b"1e3",
        "٨٠".encode(), "８０".encode(), b"80 80", f"{c}#".encode(), b"80\x00", b"80\r", b"",
    ]


def hostile_ids(own: str, c: int) -> list[bytes]:
    o = own.encode()
    return [o + f"@127.0.0.1:{c}".encode(), o + b"/..", o + f":{c}".encode(), o + b".127.0.0.1", b"../" + o,
            o.upper(), o + b"\x00", o + "é".encode(), b"", o + b"-", o + b" x"]


def test_request_line_and_routing_headers_never_reach_the_host(served: Sandbox, server: Server, canary: Canary) -> None:
    c, own = canary.port, served.sandbox_id
    requests: list[bytes] = []
    for port in (ENVD_PORT, HTTP_PORT):
        for target in hostile_targets(c):
            requests.append(build(target, routing(own, port)))
            requests.append(build(target, routing(own, port), method=b"CONNECT"))
    requests.append(build(f"127.0.0.1:{c}".encode(), routing(own, ENVD_PORT), method=b"CONNECT"))
    for bad_port in hostile_ports(c):
        requests.append(build(b"/health", routing(own, bad_port)))
    for bad_id in hostile_ids(own, c):
        requests.append(build(b"/health", [b"E2b-Sandbox-Id: " + bad_id, b"E2b-Sandbox-Port: 49983"]))
    # duplicated / half routing headers: two readers could pick different ones
    requests += [
        build(b"/health", routing(own, ENVD_PORT) + [f"E2b-Sandbox-Port: {c}".encode()]),
        build(b"/health", [f"E2b-Sandbox-Port: {c}".encode()] + routing(own, ENVD_PORT)),
        build(b"/health", routing(own, ENVD_PORT) + [b"e2b-sandbox-id: " + own.encode()]),
        build(b"/health", [f"E2b-Sandbox-Port: {c}".encode()]),
        build(b"/health", [b"E2b-Sandbox-Id: " + own.encode()]),
        build(b"/health", routing(own, ENVD_PORT) + [b"E2b-Sandbox-Port: 49983\r\nE2b-Sandbox-Port: 1"]),
    ]
    # Host routing: odd names, ports and duplicates
    sandbox_host = f"{HTTP_PORT}-{own}.localhost".encode()
    requests += [
        build(b"/", [], host=f"99999-{own}.localhost".encode()),
        build(b"/", [], host=f"0-{own}.localhost".encode() + b"\x00"),
        build(b"/", [b"Host: " + f"127.0.0.1:{c}".encode()], host=sandbox_host),
        build(b"/", [b"Host: " + sandbox_host], host=f"127.0.0.1:{c}".encode()),
        build(b"@" + f"127.0.0.1:{c}".encode() + b"/", [], host=sandbox_host),
        build(b"http://" + f"127.0.0.1:{c}".encode() + b"/", [], host=sandbox_host),
        build(b"//" + f"127.0.0.1:{c}".encode() + b"/", [], host=sandbox_host),
        build(b"/", [], host="٨٠٠٠-".encode() + own.encode() + b".localhost"),
        build(b"/", [], host=sandbox_host + b"\r\nHost: " + f"127.0.0.1:{c}".encode()),
    ]
    answers = [(request, raw_status(server, request)) for request in requests]
    wrong = [(request, status) for request, status in answers if status is None or not 400 <= status < 500]
    assert wrong == [], wrong
    assert canary.hits == []


def test_websocket_upgrades_never_reach_the_host(served: Sandbox, server: Server, canary: Canary) -> None:
    c, own = canary.port, served.sandbox_id
    requests = []
    for target in hostile_targets(c):
        requests.append(build(target, routing(own, WS_PORT) + WS_UPGRADE + [b"Connection: Upgrade"]))
    for bad_port in hostile_ports(c):
        requests.append(build(b"/", routing(own, bad_port) + WS_UPGRADE + [b"Connection: Upgrade"]))
    requests.append(build(b"/", routing(own, WS_PORT) + [f"E2b-Sandbox-Port: {c}".encode()] + WS_UPGRADE
                          + [b"Connection: Upgrade"]))
    # raw sockets send "Connection: close" too; the upgrade must be refused either way
    answers = [(request, raw_status(server, request.replace(b"Connection: close\r\n", b""))) for request in requests]
    wrong = [(request, status) for request, status in answers if status is None or not 400 <= status < 500]
    assert wrong == [], wrong
    assert canary.hits == []
    # the legitimate WebSocket to a port in the sandbox
    headers = {"E2b-Sandbox-Id": own, "E2b-Sandbox-Port": str(WS_PORT)}
    with ws_connect(f"ws://127.0.0.1:{server.port}/chat?room=1", additional_headers=headers) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"


def test_sandbox_redirects_are_not_followed(served: Sandbox, server: Server, canary: Canary) -> None:
    """A sandbox answering ``302 Location: ws://127.0.0.1:<canary>/`` must not send the
    front door there (the WebSocket client library follows redirects by default)."""
    headers = {"E2b-Sandbox-Id": served.sandbox_id, "E2b-Sandbox-Port": str(REDIRECT_PORT)}
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{server.port}/", additional_headers=headers)
    assert refused.value.response.status_code == 502
    plain = httpx.get(f"{server.url}/", headers=headers)          # plain HTTP: relayed, never followed
    assert plain.status_code == 302 and plain.headers["location"] == f"ws://127.0.0.1:{canary.port}/"
    assert canary.hits == []


def test_websocket_with_masked_host_sends_one_host(server: Server) -> None:
    sbx = Sandbox.create(timeout=120, network={"mask_request_host": "localhost:${PORT}"})
    try:
        package = Path(websockets.__file__).parent
        sbx.files.write_files([
            {"path": f"/home/user/lib/websockets/{p.relative_to(package)}", "data": p.read_bytes()}
            for p in package.rglob("*.py")
        ])
        sbx.files.write("/home/user/ws.py", WS_APP)
        sbx.commands.run("python3 /home/user/ws.py", background=True)
        wait_port(sbx, WS_PORT)
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(WS_PORT)}
        with ws_connect(f"ws://127.0.0.1:{server.port}/host", additional_headers=headers) as ws:
            assert json.loads(ws.recv()) == [f"localhost:{WS_PORT}"]
            ws.send("still echoes")
            assert ws.recv() == "still echoes"
    finally:
        sbx.kill()


def _prime_auth(server: Server, sandbox_id: str) -> dict:
    response = httpx.post(f"{server.url}/api/v1/sandbox/{sandbox_id}/auth",
                          headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_prime_gateway_urls_never_reach_the_host(served: Sandbox, server: Server, canary: Canary) -> None:
    auth = _prime_auth(server, served.sandbox_id)
    ns, job, bearer = auth["user_ns"], auth["job_id"], f"Authorization: Bearer {auth['token']}".encode()
    at = f"127.0.0.1:{canary.port}"
    targets = [
        f"/gateway/{ns}/{job}/download?path=@{at}/",
        f"/gateway/{ns}/{job}/download?path=http://{at}/",
        f"/gateway/{ns}/{job}/read-file?path=//{at}/x",
        f"/gateway/{ns}/@{at}/download?path=/etc/hostname",
        f"/gateway/{ns}/{job}@{at}/download?path=/etc/hostname",
        f"/gateway/{ns}/{job}/..%2F..%2F@{at}/download?path=/etc/hostname",
        f"/gateway/{ns}/{job}/@{at}/download",
        f"@{at}/gateway/{ns}/{job}/download?path=/etc/hostname",
        f"http://{at}/gateway/{ns}/{job}/download?path=/etc/hostname",
        f"//{at}/gateway/{ns}/{job}/download?path=/etc/hostname",
    ]
    requests = [build(t.encode(), [bearer]) for t in targets]
    answers = [(request, raw_status(server, request)) for request in requests]
    wrong = [(request, status) for request, status in answers if status is None or not 400 <= status < 500]
    assert wrong == [], wrong
    # own token, own sandbox, a Host naming the canary and a forged inner sandbox header: still just envd
    legit = build(f"/gateway/{ns}/{job}/read-file?path=/home/user/app.py".encode(),
                  [bearer, b"X-Sandlot-Gateway-Sandbox: someoneelse"], host=at.encode())
    assert raw_status(server, legit) == 200
    assert canary.hits == []
    ok = httpx.get(f"{server.url}/gateway/{ns}/{job}/read-file", params={"path": "/home/user/app.py"},
                   headers={"Authorization": f"Bearer {auth['token']}"}, timeout=30)
    assert ok.status_code == 200 and "ThreadingHTTPServer" in ok.json()["content"]


def test_legitimate_paths_queries_and_options(served: Sandbox, server: Server, canary: Canary) -> None:
    headers = {"E2b-Sandbox-Id": served.sandbox_id, "E2b-Sandbox-Port": str(HTTP_PORT)}
    target = "/a%2Fb/%E2%9C%93/@x:1?q=1&r=%20&s=%2F"
    response = httpx.get(httpx.URL(f"{server.url}{target}"), headers=headers, timeout=30)
    assert response.status_code == 200
    assert response.json()["path"] == target          # delivered byte for byte, nothing decoded
    by_host = httpx.get(f"{server.url}/x?y=1", headers={"Host": served.get_host(HTTP_PORT)}, timeout=30)
    assert by_host.status_code == 200 and by_host.json()["path"] == "/x?y=1"
    assert raw_status(server, build(b"*", routing(served.sandbox_id, HTTP_PORT), method=b"OPTIONS")) == 204
    assert canary.hits == []


def test_sandbox_cookies_are_host_only_and_hop_headers_stay(served: Sandbox, server: Server) -> None:
    headers = {"E2b-Sandbox-Id": served.sandbox_id, "E2b-Sandbox-Port": str(HTTP_PORT)}
    response = httpx.get(f"{server.url}/cookie", headers=headers, timeout=30)
    assert response.status_code == 200 and response.text == "cookie"
    assert response.headers.get_list("set-cookie") == ["a=b; Path=/", "c=d; Path=/; HttpOnly"]
    assert "x-hop" not in response.headers and "alt-svc" not in response.headers
    # a client-side cookie jar scopes them to the exact host it asked
    jar = httpx.Cookies()
    jar.extract_cookies(response)
    assert {(cookie.name, cookie.domain) for cookie in jar.jar} == {("a", "127.0.0.1"), ("c", "127.0.0.1")}
    assert json.loads(httpx.get(f"{server.url}/", headers=headers, timeout=30).text)["path"] == "/"
