"""Egress policies with the real SDK, against a "remote host" in a netns this test creates.

The remote host has two addresses (``.2`` and ``.3``), an HTTP server on both and a DNS
server on ``.2`` that knows ``allowed.sandlot.test`` (→ .2) and ``other.sandlot.test``
(→ .3). The server under test forwards sandbox DNS to it (``SANDLOT_DNS_UPSTREAMS``).
Sandbox traffic is routed and masqueraded by the host to it like to any outside host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2b import CommandExitException, Sandbox

from sandlot import ids
from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root")

REMOTE_PORT = 8080
ALLOWED, OTHER = "allowed.sandlot.test", "other.sandlot.test"

_REMOTE_SERVERS = textwrap.dedent(
    """
    import socketserver, sys, threading
    from http.server import BaseHTTPRequestHandler
    import dns.message, dns.rcode, dns.rrset

    names = {sys.argv[1]: sys.argv[3], sys.argv[2]: sys.argv[4]}

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"remote {self.server.server_address[0]} saw {self.client_address[0]}".encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args): pass

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

    class Http(socketserver.ThreadingTCPServer):   # not HTTPServer: its bind does a reverse DNS lookup
        allow_reuse_address = True
        daemon_threads = True

    for ip in (sys.argv[3], sys.argv[4]):
        srv = Http((ip, %d), Hello)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    socketserver.UDPServer((sys.argv[3], 53), Dns).serve_forever()
    """
    % REMOTE_PORT
)


@dataclass
class Remote:
    ip: str          # the name ALLOWED resolves here
    other_ip: str    # the name OTHER resolves here
    host_ip: str     # the host's end of the link (what the remote sees after NAT)


def _ip(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", *args], input=stdin, text=True, check=True)


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    net = ".".join(unique_subnet(14).split(".")[:3])    # "10.x.224": a /24 of this process's block 14
    ns, veth = f"slrh{os.getpid()}", f"rh{os.getpid() % 1_000_000}"
    r = Remote(f"{net}.2", f"{net}.3", f"{net}.1")
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    try:
        yield from _run_remote(ns, veth, r)
    finally:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def _run_remote(ns: str, veth: str, r: Remote) -> Iterator[Remote]:
    _ip("-batch", "-", stdin=f"netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\n"
                             f"addr add {r.host_ip}/24 dev {veth}\nlink set {veth} up\n")
    _ip("-n", ns, "-batch", "-", stdin=f"link set lo up\naddr add {r.ip}/24 dev eth0\naddr add {r.other_ip}/24 dev eth0\n"
                                       "link set eth0 up\n")   # no default route: nothing leaves the test
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _REMOTE_SERVERS,
                             ALLOWED, OTHER, r.ip, r.other_ip])
    try:
        for _ in range(100):
            if subprocess.run(["curl", "-s", "-m", "1", f"http://{r.ip}:{REMOTE_PORT}/"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield r
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def net_server(tmp_path_factory: pytest.TempPathFactory, remote: Remote) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-net"), api_key=ids.new_api_key(),
                 instance=unique_instance("n"), subnet=unique_subnet(5),
                 extra_env={"SANDLOT_DNS_UPSTREAMS": json.dumps([remote.ip]),
                            # the "remote host" has private (10.x) addresses: an operator's LAN allow-list
                            "SANDLOT_EGRESS_ALLOW_PRIVATE": json.dumps([f"{remote.ip}/32", f"{remote.other_ip}/32"])})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


def fetch(sbx: Sandbox, target: str) -> str:
    """Body from the remote host, or raises CommandExitException when the sandbox can't reach it."""
    return sbx.commands.run(f"curl -sS -m 4 http://{target}:{REMOTE_PORT}/", timeout=20).stdout


def blocked(sbx: Sandbox, target: str) -> bool:
    try:
        fetch(sbx, target)
    except CommandExitException:
        return True
    return False


@pytest.fixture
def make(net_server: Server) -> Iterator:
    made: list[Sandbox] = []

    def _make(**kwargs: object) -> Sandbox:
        sbx = Sandbox.create(timeout=120, **kwargs)
        made.append(sbx)
        return sbx

    yield _make
    for sbx in made:
        sbx.kill()


def test_open_sandbox_reaches_remote_host_through_nat(make, remote: Remote) -> None:
    sbx = make()
    assert fetch(sbx, remote.ip) == f"remote {remote.ip} saw {remote.host_ip}"


def test_internet_off_blocks_remote_host(make, remote: Remote) -> None:
    sbx = make(allow_internet_access=False)
    assert blocked(sbx, remote.ip)
    assert sbx.commands.run("echo still usable").stdout == "still usable\n"


def test_deny_cidr_blocks_and_allow_ip_wins(make, remote: Remote) -> None:
    net24 = remote.ip.rsplit(".", 1)[0] + ".0/24"
    denied = make(network={"deny_out": [net24]})
    assert blocked(denied, remote.ip)
    allowed = make(network={"deny_out": ["0.0.0.0/0"], "allow_out": [remote.ip]})
    assert fetch(allowed, remote.ip).startswith("remote")
    assert blocked(allowed, remote.other_ip)


def test_domain_allow_list(make, remote: Remote) -> None:
    sbx = make(network={"allow_out": [ALLOWED], "deny_out": ["0.0.0.0/0"]})
    assert fetch(sbx, ALLOWED) == f"remote {remote.ip} saw {remote.host_ip}"
    assert blocked(sbx, OTHER)                      # not resolved (NXDOMAIN) ...
    assert blocked(sbx, remote.other_ip)            # ... and its address is not reachable either
    out = sbx.commands.run(f"getent hosts {OTHER} || echo unresolved").stdout
    assert "unresolved" in out


def test_domain_rules_need_deny_all(make) -> None:
    from e2b import SandboxException

    with pytest.raises(SandboxException, match="0.0.0.0/0"):
        make(network={"allow_out": [ALLOWED]})
    with pytest.raises(SandboxException, match="domain names are not supported"):
        make(network={"deny_out": [ALLOWED]})


def test_update_network_on_running_sandbox(make, remote: Remote) -> None:
    sbx = make()
    assert fetch(sbx, remote.ip).startswith("remote")
    sbx.update_network({"deny_out": ["0.0.0.0/0"]})
    assert blocked(sbx, remote.ip)
    sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": [ALLOWED]})
    assert fetch(sbx, ALLOWED).startswith("remote")
    assert blocked(sbx, remote.other_ip)
    sbx.update_network({})                           # omitted fields are cleared: open again
    assert fetch(sbx, remote.other_ip).startswith("remote")


def test_no_path_to_host_services_other_sandboxes_or_metadata(make, net_server: Server) -> None:
    first, second = make(), make()
    gateway = first.commands.run("ip route show default | awk '{print $3}'").stdout.strip()
    other_ip = second.commands.run("hostname -I").stdout.split()[0]
    for url in (f"http://{gateway}:{net_server.port}/health", f"http://{other_ip}:49983/health",
                "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(CommandExitException):
            first.commands.run(f"curl -sS -m 3 {url}", timeout=20)


def _ip_of(sbx: Sandbox) -> str:
    return sbx.commands.run("hostname -I").stdout.split()[0]


def _reaches(server: Server, sandbox_ip: str, url: str) -> bool:
    """curl from a sandbox's network namespace, run from the host (works with no server)."""
    base = ipaddress.ip_network(server.subnet).network_address
    index = (int(ipaddress.ip_address(sandbox_ip)) - int(base)) // 4
    probe = subprocess.run(["ip", "netns", "exec", f"{server.instance}-{index}",
                            "curl", "-sS", "-m", "3", "-o", "/dev/null", url], capture_output=True)
    return probe.returncode == 0


def test_policies_survive_a_server_restart(make, net_server: Server, remote: Remote) -> None:
    """The nft table is rebuilt at start; recovery re-applies each sandbox's policy from the store."""
    closed = make(allow_internet_access=False)
    by_name = make(network={"allow_out": [ALLOWED], "deny_out": ["0.0.0.0/0"]})
    open_one = make()
    gateway = open_one.commands.run("ip route show default | awk '{print $3}'").stdout.strip()
    open_ip, closed_ip = _ip_of(open_one), _ip_of(closed)
    net_server.stop()
    # while no server runs, the sandboxes keep running and stay fenced: no host services,
    # no neighbours, and each one's egress policy still holds
    with socket.create_server(("0.0.0.0", 0)) as host_service:
        port = host_service.getsockname()[1]
        assert not _reaches(net_server, open_ip, f"http://{gateway}:{port}/")
        assert not _reaches(net_server, open_ip, f"http://{closed_ip}:49983/health")
        assert not _reaches(net_server, closed_ip, f"http://{remote.ip}:{REMOTE_PORT}/")
        assert _reaches(net_server, open_ip, f"http://{remote.ip}:{REMOTE_PORT}/")
    net_server.start()
    assert blocked(closed, remote.ip)
    assert fetch(by_name, ALLOWED).startswith("remote")
    assert blocked(by_name, remote.other_ip)
