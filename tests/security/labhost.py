"""A "test host" in a network namespace the test creates: the only target of network attacks.

It answers HTTP on port 8080 of each of its addresses and records every UDP datagram it
gets on port 9999, and every HTTP request, in a log file (the canary: what reached it);
its first address also answers DNS for a few ``*.lab.test`` names (``names``).
Addresses are this test process's own (``10.<octet>.252.0/24`` plus one per private range
with the same octet), and every one is checked to route into the test's veth before
any sandbox is started, so no packet of these tests can leave the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sandlot import ids
from tests.e2e.server import Server, _process_octet, sdk_pointed_at, unique_instance, unique_subnet

HTTP_PORT = 8080
UDP_PORT = 9999

_PROGRAM = textwrap.dedent(
    """
    import json, socket, socketserver, sys, threading
    from http.server import BaseHTTPRequestHandler
    import dns.message, dns.rcode, dns.rrset

    log = open(sys.argv[1], "a", buffering=1)

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            log.write(f"http {self.server.server_address[0]} {self.client_address[0]} {self.path}\\n")
            body = b"test host"
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args): pass

    class Http(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    names = json.loads(sys.argv[2])   # DNS on the first address: name -> A record

    class Dns(socketserver.BaseRequestHandler):
        def handle(self):
            data, sock = self.request
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            name = query.question[0].name.to_text(omit_final_dot=True)
            if name in names and query.question[0].rdtype == 1:
                reply.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", names[name]))
            elif name not in names:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(reply.to_wire(), self.client_address)

    for ip in sys.argv[3:]:
        srv = Http((ip, %d), Hello)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    dns_server = socketserver.UDPServer((sys.argv[3], 53), Dns)
    threading.Thread(target=dns_server.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", %d))
    while True:
        data, addr = udp.recvfrom(2048)
        log.write(f"udp {addr[0]} {data.decode(errors='replace')}\\n")
    """
    % (HTTP_PORT, UDP_PORT)
)


@dataclass
class LabHost:
    netns: str
    veth: str
    gateway: str            # the host's end of the link
    allowed: str            # 10.x address the operator allow-lists
    private: dict[str, str]  # range label -> an address of the test host in that range
    log: Path
    names: dict[str, str]    # what its DNS server (on ``allowed``, port 53) answers

    @property
    def resolver(self) -> str:
        return self.allowed

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_for(self, needle: str, timeout_s: float = 15) -> None:
        """Until a line containing ``needle`` is logged (an ordering barrier, not a timing claim)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines()):
                return
            time.sleep(0.05)
        raise AssertionError(f"the test host never logged {needle!r}: {self.lines()}")


def _ip(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", *args], input=stdin, text=True, check=True)


@contextmanager
def lab_host(workdir: Path) -> Iterator[LabHost]:
    octet = _process_octet()
    tag = os.getpid() % 1_000_000
    ns, veth = f"slth{tag}", f"th{tag}"
    net = f"10.{octet}.252"
    private = {
        "rfc1918-10": f"{net}.3",
        "rfc1918-172": f"172.31.{octet}.2",
        "rfc1918-192": f"192.168.{octet}.2",
        "cgnat": f"100.64.{octet}.2",
        "link-local": f"169.254.{octet}.2",
    }
    names = {"ok.lab.test": f"{net}.2", "rebind.lab.test": private["rfc1918-172"],
             "metadata.lab.test": private["link-local"]}
    host = LabHost(ns, veth, f"{net}.1", f"{net}.2", private, workdir / "testhost.log", names)
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", veth], stderr=subprocess.DEVNULL)
    proc = None
    try:
        _ip("-batch", "-", stdin=f"netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\n"
                                 f"addr add {host.gateway}/24 dev {veth}\nlink set {veth} up\n"
                                 + "".join(f"route add {a}/32 dev {veth}\n" for a in private.values()
                                           if not a.startswith(net)))
        addrs = [host.allowed, *private.values()]
        _ip("-n", ns, "-batch", "-", stdin="link set lo up\n" + "".join(f"addr add {a}/32 dev eth0\n" for a in addrs)
            + "link set eth0 up\n" + f"route add {host.gateway}/32 dev eth0\nroute add default via {host.gateway}\n")
        for a in addrs:   # nothing of these tests may leave the machine
            route = subprocess.run(["ip", "-o", "route", "get", a], capture_output=True, text=True).stdout
            assert f"dev {veth} " in route, f"{a} does not route into the test host: {route}"
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _PROGRAM, str(host.log),
                                 json.dumps(host.names), *addrs])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if subprocess.run(["curl", "-s", "-m", "1", f"http://{host.allowed}:{HTTP_PORT}/ready"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield host
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", veth], stderr=subprocess.DEVNULL)


@contextmanager
def lab_server(workdir: Path, letter: str, host: "LabHost", **env: str) -> Iterator[Server]:
    """A server whose operator allow-lists the lab host's ``allowed`` address, without a warm
    pool (``env`` adds settings), with the SDK pointed at it meanwhile."""
    srv = Server(workdir=workdir, api_key=ids.new_api_key(), instance=unique_instance(letter), subnet=unique_subnet(),
                 extra_env={"SANDLOT_EGRESS_ALLOW_PRIVATE": json.dumps([f"{host.allowed}/32"]),
                            "SANDLOT_WARM_POOL_SIZE": "0", **env})
    srv.start()
    try:
        with sdk_pointed_at(srv):
            yield srv
    finally:
        srv.stop()
