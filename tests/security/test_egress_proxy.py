"""Attacks on the egress proxy from a sandbox with a secret-injecting rule: the secret must only
ever reach the host its rule names (Host/SNI mismatches, plain HTTP to another address,
CONNECT), the proxy must not become a way to the host itself (a canary listener on a host
address), its own ports must not be reachable directly, and oversized heads are refused.
The targets are test hosts in a network namespace (tests/e2e/egress_lab.py).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import threading
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox, Secret

from sandlot import ids
from tests.e2e.egress_lab import API_NAME, OTHER_NAME, EgressLab, egress_lab
from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root"), pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressLab]:
    with egress_lab(tmp_path_factory.mktemp("egress-lab")) as lab:
        yield lab


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lab: EgressLab) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-egress-sec"), api_key=ids.new_api_key(),
                 instance=unique_instance("x"), subnet=unique_subnet(),
                 extra_env={"SANDLOT_DNS_UPSTREAMS": json.dumps([lab.api_ip]),
                            # the host's own lab address too: the host check must hold even where the
                            # operator opened a private range
                            "SANDLOT_EGRESS_ALLOW_PRIVATE": json.dumps([f"{lab.api_ip}/32", f"{lab.other_ip}/32",
                                                                        f"{lab.host_ip}/32"]),
                            "SANDLOT_EGRESS_UPSTREAM_CA_FILES": json.dumps([str(lab.ca_pem)])})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


@pytest.fixture(scope="module")
def secret_value(server: Server) -> str:
    value = "canary-secret-" + secrets.token_hex(16)
    Secret.create("canary", value)
    return value


@pytest.fixture(scope="module")
def sbx(server: Server, lab: EgressLab, secret_value: str) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=300, network={"rules": {API_NAME: [{"transform": {"headers": {
        "Authorization": "Bearer ${e2b.secrets.canary}"}}}]}})
    sandbox.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")
    yield sandbox
    sandbox.kill()


def _curl(sbx: Sandbox, *args: str) -> str:
    cmd = "curl -sS -m 8 -w ' status=%{http_code}' " + " ".join(map(shlex.quote, args))
    try:
        return sbx.commands.run(cmd, timeout=30).stdout
    except CommandExitException as exc:
        return f"failed: {exc.stdout} {exc.stderr}"


def _leaked(lab: EgressLab, secret_value: str) -> list[str]:
    return [line for line in lab.lines() if secret_value in line and not line.startswith(f"http {lab.api_ip} ")
            and not line.startswith(f"https {lab.api_ip} ")]


def test_sni_of_the_ruled_host_with_another_host_header_is_refused(
        sbx: Sandbox, lab: EgressLab, secret_value: str) -> None:
    out = _curl(sbx, "-H", f"Host: {OTHER_NAME}", f"https://{API_NAME}/")
    assert "status=421" in out
    assert _leaked(lab, secret_value) == []


def test_plain_http_with_the_ruled_host_name_to_another_address_gets_no_secret(
        sbx: Sandbox, lab: EgressLab, secret_value: str) -> None:
    out = _curl(sbx, "-H", f"Host: {API_NAME}", f"http://{lab.other_ip}/")
    assert "status=421" in out
    out = _curl(sbx, "--resolve", f"{API_NAME}:80:{lab.other_ip}", f"http://{API_NAME}/")
    assert "status=421" in out
    assert _leaked(lab, secret_value) == []


def test_connect_through_the_transparent_proxy_is_refused(sbx: Sandbox, lab: EgressLab, secret_value: str) -> None:
    out = _curl(sbx, "-p", "-x", f"http://{API_NAME}:80", f"http://{OTHER_NAME}:8080/")
    assert "405" in out
    assert _leaked(lab, secret_value) == []


def test_proxy_is_no_way_to_the_host_itself(sbx: Sandbox, lab: EgressLab) -> None:
    hits: list[bytes] = []
    canary = socket.socket()
    canary.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    canary.bind((lab.host_ip, 80))   # a host address, as a sandbox could name it
    canary.listen(8)
    canary.settimeout(0.5)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = canary.accept()
            except OSError:
                continue
            hits.append(conn.recv(4096))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        out = _curl(sbx, f"http://{lab.host_ip}/")
        assert "status=403" in out and "the host itself" in out
        out = _curl(sbx, "-H", f"Host: {API_NAME}", f"http://{lab.host_ip}/")
        assert "status=403" in out or "status=421" in out
    finally:
        stop.set()
        thread.join(5)
        canary.close()
    assert hits == []


def test_proxy_ports_are_not_reachable_directly(sbx: Sandbox, server: Server) -> None:
    log = (server.workdir / "server.log").read_text(errors="replace")
    ports = re.search(r"egress proxy listening \(http :(\d+), https :(\d+), tunnel :(\d+)\)", log)
    assert ports is not None, log[-2000:]
    gateway = sbx.commands.run("ip route | awk '/default/ {print $3}' || true", timeout=20).stdout.strip()
    if not gateway:
        gateway = sbx.commands.run("python3 -c \"import socket,struct;"
                                   "print([socket.inet_ntoa(struct.pack('<L',int(l.split()[2],16))) "
                                   "for l in open('/proc/net/route') if l.split()[1]=='00000000'][0])\"",
                                   timeout=20).stdout.strip()
    for port in ports.groups():
        probe = (f"import socket\ntry:\n socket.create_connection(('{gateway}',{port}),3)\n print('open')\n"
                 "except OSError as e:\n print('closed', e)")
        assert sbx.commands.run(f"python3 -c {shlex.quote(probe)}", timeout=20).stdout.startswith("closed")


def test_oversized_request_head_is_refused(sbx: Sandbox, lab: EgressLab) -> None:
    big = "X-Big: " + "a" * 100_000
    out = _curl(sbx, "-H", big, f"http://{API_NAME}/")
    assert "status=431" in out or "status=400" in out
    assert not [line for line in lab.lines() if "a" * 1000 in line]


def test_slow_request_head_is_cut_off(sbx: Sandbox, lab: EgressLab) -> None:
    """Slowloris: a head that never completes holds a connection for a bounded time only."""
    before = len(lab.lines())
    probe = (f"import socket\ns = socket.create_connection(('{lab.api_ip}', 80), 5)\n"
             "s.sendall(b'GET / HTTP/1.1\\r\\nHost: " + API_NAME + "\\r\\nX-Slow: ')\n"
             "s.settimeout(120)\nprint(repr(s.recv(4096)))")
    out = sbx.commands.run(f"python3 -c {shlex.quote(probe)}", timeout=150).stdout.strip()
    assert out == "b''"
    assert len(lab.lines()) == before


def test_a_workload_identity_token_only_reaches_the_host_its_rule_names(server: Server, lab: EgressLab) -> None:
    """A sandbox with ``iam`` tries to get a JWT-SVID sent elsewhere: its own header naming the
    placeholder (never expanded: only rule headers are), plain HTTP with the ruled name to
    another address, SNI of the ruled host with another Host. The canary: any JWT in the
    other host's log."""
    sandbox = Sandbox.create(timeout=120, iam={"tokens": {"aws": {"audience": "sts.amazonaws.com",
                                                                   "token_type": "JWT-SVID"}}},
                             network={"rules": {API_NAME: [{"transform": {"headers": {
                                 "Authorization": "Bearer ${e2b.identity.tokens.aws}"}}}]}})
    try:
        sandbox.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")
        before = len(lab.lines())
        placeholder = "Authorization: Bearer ${e2b.identity.tokens.aws}"
        _curl(sandbox, "-H", placeholder, f"https://{OTHER_NAME}/")
        _curl(sandbox, "-H", placeholder, f"http://{OTHER_NAME}/")
        _curl(sandbox, "--resolve", f"{API_NAME}:80:{lab.other_ip}", f"http://{API_NAME}/")
        _curl(sandbox, "-H", f"Host: {OTHER_NAME}", f"https://{API_NAME}/")
        assert "auth=yes" in _curl(sandbox, f"https://{API_NAME}/")   # the path is real
        new = lab.lines()[before:]
        assert any(line.startswith(f"https {lab.api_ip} ") and "auth=Bearer ey" in line for line in new)
        assert not [line for line in new if "eyJ" in line and not line.startswith(f"https {lab.api_ip} ")], new
        assert [line for line in new if "${e2b.identity.tokens.aws}" in line]   # the sandbox's own, literal
    finally:
        sandbox.kill()
