"""Network isolation: private ranges are closed, a sandbox's veth accepts only its own IP and MAC.

Every target is the test host (``labhost.py``): a netns this test creates, whose log is
the canary. The server allow-lists one of its addresses as an operator would
(``SANDLOT_EGRESS_ALLOW_PRIVATE``), so the legitimate path is proven next to each attack.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox

from tests.e2e.server import Server
from tests.security.labhost import HTTP_PORT, UDP_PORT, LabHost, lab_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root")


@pytest.fixture(scope="module")
def iso_server(tmp_path_factory: pytest.TempPathFactory, host: LabHost) -> Iterator[Server]:
    with lab_server(tmp_path_factory.mktemp("sandlot-iso"), "w", host,
                    SANDLOT_DNS_UPSTREAMS=json.dumps([host.resolver])) as srv:
        yield srv


@pytest.fixture
def make(iso_server: Server) -> Iterator:
    made: list[Sandbox] = []

    def _make(**kwargs: object) -> Sandbox:
        sbx = Sandbox.create(timeout=120, **kwargs)
        made.append(sbx)
        return sbx

    yield _make
    for sbx in made:
        sbx.kill()


def reaches(sbx: Sandbox, ip: str, path: str) -> bool:
    try:
        sbx.commands.run(f"curl -sS -m 3 http://{ip}:{HTTP_PORT}{path}", timeout=20)
    except CommandExitException:
        return False
    return True


def test_private_ranges_closed_even_to_allow_out_operator_allow_list_open(make, host: LabHost) -> None:
    open_one = make()
    wide_open = make(network={"allow_out": ["0.0.0.0/0", *(f"{a}/32" for a in host.private.values())]})
    for sbx, who in ((open_one, "open"), (wide_open, "allowout")):
        for label, addr in host.private.items():
            assert not reaches(sbx, addr, f"/attack-{who}-{label}"), (who, label, addr)
        # the legitimate path: the operator's allow-listed LAN address answers
        assert reaches(sbx, host.allowed, f"/legit-{who}")
    host.wait_for("/legit-allowout")
    assert not [line for line in host.lines() if "/attack-" in line], host.lines()


def test_operator_allow_list_does_not_override_a_sandbox_policy(make, host: LabHost) -> None:
    closed = make(allow_internet_access=False)
    assert not reaches(closed, host.allowed, "/attack-closed")
    fenced = make(network={"deny_out": [f"{host.allowed}/32"]})
    assert not reaches(fenced, host.allowed, "/attack-fenced")
    assert reaches(make(), host.allowed, "/legit-after-closed")
    host.wait_for("/legit-after-closed")
    assert not [line for line in host.lines() if "/attack-closed" in line or "/attack-fenced" in line]


def test_an_allowed_name_resolving_to_a_private_address_stays_closed(make, host: LabHost) -> None:
    """DNS rebinding: the filter resolves an allowed name to a private or metadata address,
    which the floor still closes; an allowed name on the operator's allow-list works."""
    sbx = make(network={"deny_out": ["0.0.0.0/0"], "allow_out": ["ok.lab.test", "rebind.lab.test", "metadata.lab.test"]})
    for name in ("rebind.lab.test", "metadata.lab.test"):
        assert sbx.commands.run(f"getent hosts {name}").stdout.split()[0] == host.names[name]   # resolved ...
        assert not reaches(sbx, name, f"/attack-{name}")                                        # ... not reachable
    assert reaches(sbx, "ok.lab.test", "/legit-dns")
    host.wait_for("/legit-dns")
    assert not [line for line in host.lines() if "/attack-" in line and ".lab.test" in line], host.lines()


def test_host_addresses_and_neighbours_stay_closed(make, iso_server: Server, host: LabHost) -> None:
    first, second = make(), make()
    gateway = first.commands.run("ip route show default | awk '{print $3}'").stdout.strip()
    other_ip = second.commands.run("hostname -I").stdout.split()[0]
    for url in (f"http://{gateway}:{iso_server.port}/health", f"http://{host.gateway}:{iso_server.port}/health",
                f"http://{other_ip}:49983/health"):
        with pytest.raises(CommandExitException):
            first.commands.run(f"curl -sS -m 3 {url}", timeout=20)
    assert second.commands.run("echo fine").stdout == "fine\n"


# --- anti-spoofing -------------------------------------------------------------------------------

FORGER = textwrap.dedent(
    """
    # A raw-socket forger (needs CAP_NET_RAW in the sandbox's netns): sends Ethernet frames
    # whose source MAC/IP the sandbox chooses. Prints "ok <what>" per frame sent, or "EPERM".
    import socket, struct, sys

    def csum(b):
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        s = (s >> 16) + (s & 0xffff); s += s >> 16
        return ~s & 0xffff

    def mac(text): return bytes.fromhex(text.replace(":", ""))
    def ip(text): return socket.inet_aton(text)

    def udp_frame(src_mac, dst_mac, src_ip, dst_ip, dport, payload):
        udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, ip(src_ip), ip(dst_ip))
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        return mac(dst_mac) + mac(src_mac) + b"\\x08\\x00" + hdr + udp

    def arp_frame(src_mac, sender_mac, sender_ip, target_ip):
        body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac(sender_mac), ip(sender_ip), b"\\0" * 6, ip(target_ip))
        return b"\\xff" * 6 + mac(src_mac) + b"\\x08\\x06" + body

    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))   # receives ARP
    except PermissionError:
        print("EPERM"); sys.exit(0)
    s.bind(("eth0", 0))
    own_mac = open("/sys/class/net/eth0/address").read().strip()
    own_ip = ip(sys.argv[1])
    for spec in sys.argv[2:]:
        if spec == "wait-arp-reply":   # until the host answers our own ARP request (a barrier)
            s.settimeout(10)
            while True:
                f = s.recv(2048)
                if f[12:14] == b"\\x08\\x06" and f[20:22] == b"\\x00\\x02" and f[38:42] == own_ip:
                    print("ok", spec); break
            continue
        kind, *a = spec.split(",")
        m = own_mac if a[0] == "own" else a[0]
        if kind == "udp":   # udp,<src mac|own>,<src ip>,<dst mac>,<dst ip>,<payload>
            s.send(udp_frame(m, a[2], a[1], a[3], UDP_PORT, a[4].encode()))
        else:               # arp,<frame src mac|own>,<sender mac|own>,<sender ip>,<target ip>
            s.send(arp_frame(m, own_mac if a[1] == "own" else a[1], a[2], a[3]))
        print("ok", spec)
    """
).replace("UDP_PORT", str(UDP_PORT))


def _slot(server: Server, sandbox_ip: str) -> tuple[str, str]:
    """(netns, host-side veth) of the sandbox at ``sandbox_ip``."""
    base = ipaddress.ip_network(server.subnet).network_address
    index = (int(ipaddress.ip_address(sandbox_ip)) - int(base)) // 4
    return f"{server.instance}-{index}", f"{server.instance}v{index}"


def _forge(sbx: Sandbox, server: Server, ip: str, *frames: str) -> str:
    """Run the forger as root inside the sandbox; where the sandbox has no CAP_NET_RAW over
    its netns (user namespaces), run it in the same netns from the host instead, so the
    host-side rules are what is tested either way. Returns where it ran."""
    sbx.files.write("/tmp/forger.py", FORGER)
    out = sbx.commands.run(f"python3 /tmp/forger.py {ip} {' '.join(frames)}", user="root", timeout=30).stdout
    if out.strip() == "EPERM":
        netns, _ = _slot(server, ip)
        done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", FORGER, ip, *frames],
                              capture_output=True, text=True, check=True)
        assert done.stdout.count("ok ") == len(frames), done.stdout
        return "netns"
    assert out.count("ok ") == len(frames), out
    return "sandbox"


def test_a_sandbox_cannot_send_as_its_neighbour_or_with_a_forged_mac(make, iso_server: Server, host: LabHost) -> None:
    attacker, victim = make(), make()
    a_ip, b_ip = (s.commands.run("hostname -I").stdout.split()[0] for s in (attacker, victim))
    _, a_veth = _slot(iso_server, a_ip)
    gw_mac = open(f"/sys/class/net/{a_veth}/address").read().strip()
    gw_ip = attacker.commands.run("ip route show default | awk '{print $3}'").stdout.strip()
    forged_ips = [b_ip, gw_ip, host.gateway, "8.8.8.8", str(ipaddress.ip_address(a_ip) + 1)]
    frames = [f"udp,own,{ip},{gw_mac},{host.allowed},spoof-ip-{n}" for n, ip in enumerate(forged_ips)]
    frames.append(f"udp,02:53:00:00:00:99,{a_ip},{gw_mac},{host.allowed},spoof-mac")
    frames.append(f"udp,own,{a_ip},{gw_mac},{host.allowed},legit-own")   # last: an ordering barrier
    where = _forge(attacker, iso_server, a_ip, *frames)
    host.wait_for("legit-own")    # the forger works and frames arrive in order ...
    assert not [line for line in host.lines() if "spoof-" in line], (where, host.lines())   # ... forged ones don't
    assert victim.commands.run("echo untouched").stdout == "untouched\n"


def test_arp_from_a_sandbox_carries_only_its_own_ip_and_mac(make, iso_server: Server) -> None:
    attacker, victim = make(), make()
    a_ip, b_ip = (s.commands.run("hostname -I").stdout.split()[0] for s in (attacker, victim))
    _, a_veth = _slot(iso_server, a_ip)
    gw_ip = attacker.commands.run("ip route show default | awk '{print $3}'").stdout.strip()
    subprocess.run(["ip", "neigh", "flush", "dev", a_veth], check=True)
    where = _forge(attacker, iso_server, a_ip,
                   f"arp,own,own,{b_ip},{gw_ip}",                     # claims the neighbour's IP
                   f"arp,own,02:53:00:00:00:98,{a_ip},{gw_ip}",       # its own IP, another MAC
                   f"arp,02:53:00:00:00:97,own,{a_ip},{gw_ip}",       # frame from another MAC
                   f"arp,own,own,{a_ip},{gw_ip}",                     # legit: who-has gateway
                   "wait-arp-reply")                                  # answered: all were processed
    neigh = subprocess.run(["ip", "neigh", "show", "dev", a_veth], capture_output=True, text=True).stdout
    # the legit request was answered and learned; no forged identity was learned on the link
    assert a_ip in neigh, (where, neigh)
    assert b_ip not in neigh and "02:53:00:00:00:9" not in neigh, (where, neigh)
    assert victim.commands.run("echo untouched").stdout == "untouched\n"
