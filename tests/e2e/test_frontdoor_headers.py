"""Through the front door a server in the sandbox reads the request's header lines with
their names as the client sent them (issue 15): Go's reverse proxy in front of E2B's
sandboxes keeps them, an ASGI relay lowercased them. The sandbox's server here reads raw
bytes from its socket and answers them back, so the test sees exactly what it saw.
"""

from __future__ import annotations

import json

import httpx
from e2b import Sandbox

from tests.e2e.server import Server
from tests.e2e.test_ports import wait_port

RAW_PORT = 8003
RAW_SERVER = f"""
import socket, threading
def serve(conn):
    with conn:
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\\r\\n\\r\\n")[0]
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(head) + head)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", {RAW_PORT}))
server.listen(16)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],)).start()
"""


def test_header_names_arrive_as_sent(server: Server, sandbox: Sandbox) -> None:
    sandbox.files.write("/home/user/raw.py", RAW_SERVER)
    sandbox.commands.run("python3 /home/user/raw.py", background=True)
    wait_port(sandbox, RAW_PORT)
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": str(RAW_PORT),
               "X-Custom-Header": "Value With Case", "x-all-lower": "1", "Content-Type": "application/json"}
    response = httpx.post(f"{server.url}/echo?x=1", headers=headers, content=json.dumps({"a": 1}))
    assert response.status_code == 200
    lines = response.content.split(b"\r\n")
    assert lines[0] == b"POST /echo?x=1 HTTP/1.1"
    assert lines[1].startswith(b"Host: ")   # first, in the case httpx sent it, the sandbox's address
    names = [line.split(b":", 1)[0] for line in lines[1:]]
    for name in (b"X-Custom-Header", b"x-all-lower", b"Content-Type", b"Content-Length", b"E2b-Sandbox-Id"):
        assert name in names, (name, lines)
    assert b"X-Custom-Header: Value With Case" in lines
    assert b"x-custom-header" not in names and b"Connection" not in names
