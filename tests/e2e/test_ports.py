"""Ingress: servers inside a sandbox reached from the host through the front door.

Headers mode (``E2b-Sandbox-Id``/``E2b-Sandbox-Port``) and Host mode
(``{port}-{id}.{domain}``, from ``sandbox.get_host(port)``), plain HTTP, server-sent
events, a WebSocket echo server (the ``websockets`` package copied into the sandbox
from this venv) and a 100 MB streamed download.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from e2b import Sandbox
from websockets.sync.client import connect as ws_connect

from tests.e2e.server import Server

HTTP_PORT, SSE_PORT, WS_PORT, ECHO_PORT = 8000, 8001, 8765, 8002

SSE_SERVER = f"""
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(5):
            self.wfile.write(f"data: {{i}}\\n\\n".encode()); self.wfile.flush(); time.sleep(0.5)
ThreadingHTTPServer(("0.0.0.0", {SSE_PORT}), H).serve_forever()
"""

ECHO_HOST_SERVER = f"""
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.headers.get("Host", "").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("0.0.0.0", {ECHO_PORT}), H).serve_forever()
"""

WS_SERVER = f"""
import asyncio, sys
sys.path.insert(0, "/home/user/lib")
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "0.0.0.0", {WS_PORT}, max_size=None):
        await asyncio.Future()
asyncio.run(main())
"""


def wait_port(sbx: Sandbox, port: int) -> None:
    sbx.commands.run(f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
                     timeout=30)


def via_headers(sbx: Sandbox, port: int) -> dict[str, str]:
    return {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)}


@pytest.fixture(scope="module")
def served(server: Server) -> Iterator[Sandbox]:
    """One sandbox running every test server (module-scoped: starting them costs seconds)."""
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.commands.run("mkdir -p /home/user/www && head -c 100M /dev/urandom > /home/user/www/big.bin "
                         "&& echo hello > /home/user/www/index.txt", timeout=60)
        package = Path(websockets.__file__).parent
        sbx.files.write_files([
            {"path": f"/home/user/lib/websockets/{p.relative_to(package)}", "data": p.read_bytes()}
            for p in package.rglob("*.py")
        ])
        for name, code in (("sse.py", SSE_SERVER), ("echo_host.py", ECHO_HOST_SERVER), ("ws.py", WS_SERVER)):
            sbx.files.write(f"/home/user/{name}", code)
            sbx.commands.run(f"python3 /home/user/{name}", background=True)
        sbx.commands.run(f"cd /home/user/www && python3 -m http.server {HTTP_PORT}", background=True)
        for port in (HTTP_PORT, SSE_PORT, ECHO_PORT, WS_PORT):
            wait_port(sbx, port)
        yield sbx
    finally:
        sbx.kill()


def test_http_by_headers_and_by_host(served: Sandbox, server: Server) -> None:
    by_headers = httpx.get(f"{server.url}/index.txt", headers=via_headers(served, HTTP_PORT))
    assert by_headers.status_code == 200 and by_headers.text == "hello\n"
    host = served.get_host(HTTP_PORT)
    assert host.startswith(f"{HTTP_PORT}-{served.sandbox_id}.")
    by_host = httpx.get(f"{server.url}/index.txt", headers={"Host": host})
    assert by_host.status_code == 200 and by_host.text == "hello\n"


def test_100_mb_response_is_streamed(served: Sandbox, server: Server) -> None:
    expected = served.commands.run("sha256sum /home/user/www/big.bin", timeout=60).stdout.split()[0]
    digest, size = hashlib.sha256(), 0
    with httpx.stream("GET", f"{server.url}/big.bin", headers=via_headers(served, HTTP_PORT), timeout=120) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            size += len(chunk)
    assert size == 100 * 1024 * 1024
    assert digest.hexdigest() == expected


def test_server_sent_events_arrive_as_sent(served: Sandbox, server: Server) -> None:
    started = time.monotonic()
    arrivals = []
    with httpx.stream("GET", f"{server.url}/events", headers=via_headers(served, SSE_PORT), timeout=30) as response:
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((line, time.monotonic() - started))
    assert [a[0] for a in arrivals] == [f"data: {i}" for i in range(5)]
    assert arrivals[0][1] < arrivals[-1][1] - 1.5, arrivals   # not buffered until the end


def test_websocket_echo_by_headers_and_by_host(served: Sandbox, server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/"
    with ws_connect(url, additional_headers=via_headers(served, WS_PORT), max_size=None) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        blob = bytes(range(256)) * 4096                   # 1 MiB binary frame
        ws.send(blob)
        assert ws.recv() == blob
    host = served.get_host(WS_PORT)
    sock = socket.create_connection(("127.0.0.1", server.port))
    with ws_connect(f"ws://{host}/", sock=sock) as ws:
        ws.send("by host")
        assert ws.recv() == "by host"


def test_closed_port_and_unknown_sandbox_answer_502_json(served: Sandbox, server: Server) -> None:
    closed = httpx.get(f"{server.url}/", headers=via_headers(served, 9999))
    assert closed.status_code == 502
    assert closed.json()["message"] == "The sandbox is running but port is not open"
    assert closed.json()["code"] == 502
    unknown = httpx.get(f"{server.url}/", headers={"E2b-Sandbox-Id": "nosuchsandbox", "E2b-Sandbox-Port": "8000"})
    assert unknown.status_code == 502 and unknown.json()["message"] == "The sandbox was not found"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{server.port}/", additional_headers=via_headers(served, 9999))
    assert refused.value.response.status_code == 502


def test_private_sandbox_needs_traffic_token_and_masks_host(server: Server) -> None:
    sbx = Sandbox.create(timeout=120, network={"allow_public_traffic": False, "mask_request_host": "localhost:${PORT}"})
    try:
        token = sbx.traffic_access_token
        assert token
        sbx.files.write("/home/user/echo_host.py", ECHO_HOST_SERVER)   # envd itself needs no traffic token
        sbx.commands.run("python3 /home/user/echo_host.py", background=True)
        wait_port(sbx, ECHO_PORT)
        headers = via_headers(sbx, ECHO_PORT)
        missing = httpx.get(f"{server.url}/", headers=headers)
        assert missing.status_code == 403 and missing.json()["code"] == 403
        wrong = httpx.get(f"{server.url}/", headers={**headers, "e2b-traffic-access-token": "nope"})
        assert wrong.status_code == 403
        ok = httpx.get(f"{server.url}/", headers={**headers, "e2b-traffic-access-token": token})
        assert ok.status_code == 200
        assert ok.text == f"localhost:{ECHO_PORT}"
    finally:
        sbx.kill()
    public = Sandbox.create(timeout=60)
    try:
        assert public.traffic_access_token is None
    finally:
        public.kill()
