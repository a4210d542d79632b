"""E2B's ``network.rules`` (header injection from team secrets) and ``egressProxy`` with the real
SDK, against test hosts in a network namespace (tests/e2e/egress_lab.py): the secret reaches
the matching host over HTTPS and HTTP and nothing else, the sandbox can't read it, an upstream
SOCKS5 proxy carries the traffic when configured, rule updates apply to a running sandbox, and
a sandbox without rules keeps its direct path.

Workload identity (E2B ``iam``): a rule header naming ``${e2b.identity.tokens.<name>}`` carries a
JWT-SVID minted per request that verifies against the server's published JWKS.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox, Secret

from sandlot import ids
from tests.e2e.egress_lab import API_NAME, ECHO_PORT, OTHER_NAME, SOCKS_PASSWORD, SOCKS_PORT, SOCKS_TLS_PORT, \
    SOCKS_USER, EgressLab, egress_lab
from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet
from tests.unit.test_egress_identity import verify

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root"), pytest.mark.slow]

SECRET_NAME = "lab-api-key"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressLab]:
    with egress_lab(tmp_path_factory.mktemp("egress-lab")) as lab:
        yield lab


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lab: EgressLab) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-egress"), api_key=ids.new_api_key(),
                 instance=unique_instance("e"), subnet=unique_subnet(),
                 extra_env={"SANDLOT_DNS_UPSTREAMS": json.dumps([lab.api_ip]),
                            "SANDLOT_EGRESS_ALLOW_PRIVATE": json.dumps([f"{lab.api_ip}/32", f"{lab.other_ip}/32"]),
                            # the lab's HTTPS servers have a test CA: trusted by a setting, not by skipping checks
                            "SANDLOT_EGRESS_UPSTREAM_CA_FILES": json.dumps([str(lab.ca_pem)])})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


@pytest.fixture(scope="module")
def secret_value(server: Server) -> str:
    value = "lab-secret-" + secrets.token_hex(16)
    Secret.create(SECRET_NAME, value)
    return value


def _rules(name: str = API_NAME, header: str = "Authorization",
           template: str = "Bearer ${e2b.secrets." + SECRET_NAME + "}") -> dict:
    return {name: [{"transform": {"headers": {header: template}}}]}


def _sandbox(lab: EgressLab, **network: object) -> Sandbox:
    sbx = Sandbox.create(timeout=300, network=network or None)   # type: ignore[arg-type]
    sbx.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")
    return sbx


def _curl(sbx: Sandbox, url: str, *args: str) -> str:
    cmd = " ".join(["curl", "-sS", "-m", "8", *map(shlex.quote, args), shlex.quote(url)])
    try:
        return sbx.commands.run(cmd, timeout=30).stdout
    except CommandExitException as exc:
        return f"failed: {exc.stderr}"


@pytest.fixture(scope="module")
def ruled(server: Server, lab: EgressLab, secret_value: str) -> Iterator[Sandbox]:
    sbx = _sandbox(lab, rules=_rules())
    yield sbx
    sbx.kill()


def test_rule_injects_the_secret_over_https_and_http_to_the_matching_host_only(
        ruled: Sandbox, lab: EgressLab, secret_value: str) -> None:
    assert _curl(ruled, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
    assert _curl(ruled, f"http://{API_NAME}/") == f"http {lab.api_ip} auth=yes"
    assert _curl(ruled, f"https://{OTHER_NAME}/") == f"https {lab.other_ip} auth=no"
    assert _curl(ruled, f"http://{OTHER_NAME}/") == f"http {lab.other_ip} auth=no"
    log = lab.lines()
    assert f"https {lab.api_ip} host={API_NAME} auth=Bearer {secret_value} x-extra=None" in log
    assert f"http {lab.api_ip} host={API_NAME} auth=Bearer {secret_value} x-extra=None" in log
    assert not [line for line in log if lab.other_ip in line and secret_value in line]


def test_rule_replaces_the_sandboxs_own_header(ruled: Sandbox, lab: EgressLab, secret_value: str) -> None:
    assert _curl(ruled, f"https://{API_NAME}/", "-H", "Authorization: Bearer forged") == f"https {lab.api_ip} auth=yes"
    assert "auth=Bearer forged" not in "\n".join(lab.lines())


def test_tools_trust_the_egress_ca_unmodified(ruled: Sandbox, lab: EgressLab) -> None:
    script = ("import urllib.request,ssl;"
              f"print(urllib.request.urlopen('https://{API_NAME}/', timeout=8).read().decode())")
    assert ruled.commands.run(f"python3 -c {shlex.quote(script)}", timeout=30).stdout.strip() == \
        f"https {lab.api_ip} auth=yes"
    # Node's fetch (undici) has its own CA store: it trusts the proxy through NODE_EXTRA_CA_CERTS
    fetch = f"fetch('https://{API_NAME}/').then(r => r.text()).then(t => console.log(t))"
    assert ruled.commands.run(f"node -e {shlex.quote(fetch)}", timeout=30).stdout.strip() == \
        f"https {lab.api_ip} auth=yes"
    env = ruled.commands.run("env", timeout=30).stdout
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in env
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" in env
    assert "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" in env


def test_the_secret_is_nowhere_the_sandbox_or_the_logs_can_read(
        ruled: Sandbox, server: Server, secret_value: str) -> None:
    _curl(ruled, f"https://{API_NAME}/")
    seen = ruled.commands.run("(env; cat /proc/*/environ /proc/*/cmdline) 2>/dev/null | tr '\\0' '\\n'; true",
                              user="root", timeout=60).stdout
    assert "SSL_CERT_FILE" in seen and secret_value not in seen
    tail = secret_value[-20:]   # the whole value must not be on this command line either
    files = ruled.commands.run(f"grep -rsF -l {tail} /etc /root /home /tmp /var /usr/local /run /opt; true",
                               user="root", timeout=120).stdout
    assert files.strip() == ""
    info = ruled.get_info()
    assert secret_value not in repr(info)
    assert "${e2b.secrets." + SECRET_NAME + "}" in repr(info.network)
    assert secret_value not in (server.workdir / "server.log").read_text(errors="replace")


def test_rule_update_applies_to_the_running_sandbox(server: Server, lab: EgressLab, secret_value: str) -> None:
    sbx = _sandbox(lab)
    try:
        assert _curl(sbx, f"http://{API_NAME}/") == f"http {lab.api_ip} auth=no"
        assert "SSL_CERT_FILE" not in sbx.commands.run("env", timeout=30).stdout
        sbx.update_network({"rules": _rules(header="X-Extra", template="k=${e2b.secrets." + SECRET_NAME + "}")})
        assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in sbx.commands.run("env", timeout=30).stdout
        assert _curl(sbx, f"http://{API_NAME}/") == f"http {lab.api_ip} auth=no"
        assert f"http {lab.api_ip} host={API_NAME} auth=None x-extra=k={secret_value}" in lab.lines()
        # HTTPS right after the update: the server's CA is in every sandbox's system bundle
        assert _curl(sbx, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=no"
        sbx.update_network({"rules": _rules(template="${e2b.secrets.no-such-secret}")})
        assert "the secret 'no-such-secret' named by a network rule does not exist" in _curl(sbx, f"http://{API_NAME}/")
        sbx.update_network({})
        injected = len([line for line in lab.lines() if "x-extra=k=" in line])
        assert _curl(sbx, f"http://{API_NAME}/") == f"http {lab.api_ip} auth=no"
        assert len([line for line in lab.lines() if "x-extra=k=" in line]) == injected
    finally:
        sbx.kill()


def test_egress_proxy_carries_the_traffic_through_socks5(server: Server, lab: EgressLab, secret_value: str) -> None:
    proxy = {"address": f"{lab.api_ip}:{SOCKS_PORT}", "username": SOCKS_USER, "password": SOCKS_PASSWORD}
    sbx = _sandbox(lab, rules=_rules(), egress_proxy=proxy)
    try:
        before = len(lab.lines())
        assert _curl(sbx, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
        echo = (f"import socket;s=socket.create_connection(('{lab.api_ip}',{ECHO_PORT}),5);"
                "s.sendall(b'hi');print(s.recv(64).decode())")
        echoed = sbx.commands.run(f"python3 -c {shlex.quote(echo)}", timeout=30).stdout
        new = lab.lines()[before:]
        assert f"socks {lab.api_ip}:443" in new
        assert f"socks {lab.api_ip}:{ECHO_PORT}" in new, (new, echoed)
        assert "echo:hi" in echoed
        info = sbx.get_info()
        assert SOCKS_PASSWORD not in repr(info)
    finally:
        sbx.kill()


def test_sandbox_without_rules_keeps_its_direct_path(server: Server, lab: EgressLab) -> None:
    sbx = _sandbox(lab)
    try:
        # not intercepted: the lab's own certificate (its test CA) is what the sandbox sees
        sbx.files.write("/tmp/lab-ca.pem", lab.ca_pem.read_text())
        assert _curl(sbx, f"https://{API_NAME}/", "--cacert", "/tmp/lab-ca.pem") == f"https {lab.api_ip} auth=no"
        assert _curl(sbx, f"https://{API_NAME}/").startswith("failed")   # and the test CA is not trusted
    finally:
        sbx.kill()


def test_invalid_rules_and_iam_are_refused(server: Server) -> None:
    import httpx
    api = httpx.Client(base_url=server.url, headers={"X-API-Key": server.api_key})
    bad = [{"rules": {"*": [{}]}}, {"rules": {"a.test": [{"transform": {"headers": {"Host": "x"}}}]}},
           {"rules": {"a.test": [{"transform": {"headers": {"A": "${e2b.secrets.sec_x}"}}}]}},
           {"rules": {"a.test": [{"transform": {"headers": {"A": "${e2b.secrets.x"}}}]}},
           {"egressProxy": {"address": "127.0.0.1:1080"}}, {"egressProxy": {"address": "nohost"}}]
    for network in bad:
        answer = api.post("/v2/sandboxes", json={"templateID": "base", "network": network})
        assert answer.status_code == 400, (network, answer.text)
    aws = {"audience": "sts.amazonaws.com", "tokenType": "JWT-SVID"}
    bad_iam = [{"tokens": {"aws": {"audience": "x", "tokenType": "OIDC"}}}, {"tokens": {"a}b": aws}},
               {"tokens": {f"t{i}": aws for i in range(6)}}, {"tokens": {"": aws}}]
    for iam in bad_iam:
        answer = api.post("/v2/sandboxes", json={"templateID": "base", "iam": iam})
        assert answer.status_code == 400 and "iam" in answer.json()["message"], (iam, answer.text)
    unregistered = {"rules": {"a.test": [{"transform": {"headers": {"A": "${e2b.identity.tokens.gcp}"}}}]}}
    answer = api.post("/v2/sandboxes", json={"templateID": "base", "network": unregistered,
                                             "iam": {"tokens": {"aws": aws}}})
    assert answer.status_code == 400 and "'gcp'" in answer.json()["message"]


_TLS_SERVER = """
import http.server, ssl
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"tls backend " + self.path.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("/tmp/tls.pem", "/tmp/tls.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


def test_https_ports_are_reencrypted_to_the_sandbox(server: Server, lab: EgressLab) -> None:
    """E2B's httpsPorts: the front door speaks TLS to that sandbox port, self-signed accepted."""
    import httpx
    from tests.e2e.egress_lab import self_signed
    cert, key = self_signed("backend.invalid")
    sbx = Sandbox.create(timeout=120, network={"https_ports": [8443]})
    try:
        sbx.files.write("/tmp/tls.pem", cert)
        sbx.files.write("/tmp/tls.key", key)
        sbx.files.write("/tmp/srv.py", _TLS_SERVER)
        sbx.commands.run("python3 /tmp/srv.py", background=True)
        sbx.commands.run("for i in $(seq 50); do python3 -c \"import socket;socket.create_connection(('127.0.0.1',8443),1)\" "
                         "2>/dev/null && break; sleep 0.1; done", timeout=30)
        answer = httpx.get(f"{server.url}/hello?x=1", headers={"Host": sbx.get_host(8443)}, timeout=20)
        assert answer.status_code == 200 and answer.text == "tls backend /hello?x=1"
        assert sbx.get_info().network.get("https_ports") == [8443] or "8443" in repr(sbx.get_info().network)
    finally:
        sbx.kill()
    api = httpx.Client(base_url=server.url, headers={"X-API-Key": server.api_key})
    refused = api.post("/v2/sandboxes", json={"templateID": "base", "network": {"httpsPorts": [49983]}})
    assert refused.status_code == 400


def test_rules_survive_pause_resume_and_go_with_snapshots(server: Server, lab: EgressLab, secret_value: str) -> None:
    """The rules are stored with the sandbox: a resume and a sandbox made from its snapshot
    inject the header as the original did (the secret is read again, never stored with them)."""
    sbx = _sandbox(lab, rules=_rules())
    made: list[Sandbox] = [sbx]
    try:
        assert _curl(sbx, f"http://{API_NAME}/") == f"http {lab.api_ip} auth=yes"
        sbx.pause()
        resumed = Sandbox.connect(sbx.sandbox_id)
        assert _curl(resumed, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
        snap = resumed.create_snapshot()
        clone = Sandbox.create(snap.snapshot_id, timeout=120)
        made.append(clone)
        clone.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")   # a clone's is new
        assert _curl(clone, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
        assert "${e2b.secrets." + SECRET_NAME + "}" in repr(clone.get_info().network)
        Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        for one in made:
            one.kill()


def test_egress_proxy_over_tls_with_its_own_ca(server: Server, lab: EgressLab) -> None:
    """``egressProxy.tls`` with a ``caCert``: the SOCKS5 hop is TLS, verified against that CA only."""
    proxy = {"address": f"{lab.api_ip}:{SOCKS_TLS_PORT}", "username": SOCKS_USER, "password": SOCKS_PASSWORD,
             "tls": {"ca_cert": lab.ca_pem.read_text()}}
    sbx = _sandbox(lab, egress_proxy=proxy)
    try:
        before = len(lab.lines())
        echo = (f"import socket;s=socket.create_connection(('{lab.api_ip}',{ECHO_PORT}),5);"
                "s.sendall(b'tls');print(s.recv(64).decode())")
        assert sbx.commands.run(f"python3 -c {shlex.quote(echo)}", timeout=30).stdout.strip() == "echo:tls"
        assert f"socks {lab.api_ip}:{ECHO_PORT}" in lab.lines()[before:]
        assert "caCert" not in repr(sbx.get_info().network) and "BEGIN CERTIFICATE" not in repr(sbx.get_info())
    finally:
        sbx.kill()


def _bearers(lab: EgressLab, since: int) -> list[str]:
    """The JWTs the lab's HTTPS host received after line ``since`` (``auth=Bearer <jwt>``)."""
    return [line.split("auth=Bearer ", 1)[1].split(" ", 1)[0] for line in lab.lines()[since:]
            if line.startswith(f"https {lab.api_ip} ") and "auth=Bearer ey" in line]


def test_iam_token_is_minted_per_request_and_verifies_against_the_jwks(server: Server, lab: EgressLab) -> None:
    import httpx
    sbx = Sandbox.create(
        timeout=300, iam={"tokens": {"aws": Secret.iam_token(audience="sts.amazonaws.com", token_type="JWT-SVID")}},
        network={"rules": {API_NAME: [{"transform": lambda ctx: {
            "headers": {"Authorization": f"Bearer {ctx.iam.tokens['aws']}"}}}]}})
    made = [sbx]
    try:
        sbx.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")
        before = len(lab.lines())
        assert _curl(sbx, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
        assert _curl(sbx, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
        tokens = _bearers(lab, before)
        assert len(tokens) == 2 and tokens[0] != tokens[1]   # fresh per request
        public = httpx.Client(base_url=server.url)   # no API key: audiences fetch these
        discovery = public.get("/.well-known/openid-configuration").json()
        jwks = public.get(discovery["jwks_uri"].removeprefix(discovery["issuer"])).json()
        header, claims = verify(tokens[0], jwks)
        assert header["alg"] == "ES256"
        assert claims["iss"] == discovery["issuer"] and claims["aud"] == "sts.amazonaws.com"
        assert claims["sandbox_id"] == sbx.sandbox_id and claims["template_id"] == sbx.get_info().template_id
        assert claims["sub"] == f"spiffe://sandlot.local/team/{claims['team_id']}/sandbox/{sbx.sandbox_id}"
        assert 0 < claims["exp"] - claims["iat"] <= 300
        # nothing of a token is anywhere the sandbox (or get_info, or the log) can read
        signature = tokens[0].rsplit(".", 1)[1][-24:]
        seen = sbx.commands.run("(env; cat /proc/*/environ /proc/*/cmdline) 2>/dev/null | tr '\\0' '\\n'; true",
                                user="root", timeout=60).stdout
        assert "SSL_CERT_FILE" in seen and signature not in seen
        files = sbx.commands.run(f"grep -rsF -l -- {signature} /etc /root /home /tmp /var /usr/local /run /opt; true",
                                 user="root", timeout=120).stdout
        assert files.strip() == ""
        info = repr(sbx.get_info())   # the rule shows its placeholder, as with secrets; iam itself is not shown
        assert signature not in info and "${e2b.identity.tokens.aws}" in info and "sts.amazonaws.com" not in info
        assert signature not in (server.workdir / "server.log").read_text(errors="replace")
        # PUT /network cannot add tokens, nor name one the create did not define; keeping the rule works
        api = httpx.Client(base_url=server.url, headers={"X-API-Key": server.api_key})
        added = api.put(f"/sandboxes/{sbx.sandbox_id}/network",
                        json={"iam": {"tokens": {"gcp": {"audience": "g", "tokenType": "JWT-SVID"}}}})
        assert added.status_code == 400, added.text
        named = api.put(f"/sandboxes/{sbx.sandbox_id}/network", json={"rules": {API_NAME: [
            {"transform": {"headers": {"Authorization": "${e2b.identity.tokens.gcp}"}}}]}})
        assert named.status_code == 400 and "'gcp'" in named.json()["message"]
        sbx.update_network({"rules": {API_NAME: [{"transform": lambda ctx: {
            "headers": {"X-Extra": ctx.iam.tokens["aws"]}}}]}})
        before = len(lab.lines())
        assert _curl(sbx, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=no"
        extra = [line for line in lab.lines()[before:] if "x-extra=eyJ" in line]
        assert len(extra) == 1
        verify(extra[0].split("x-extra=", 1)[1].strip(), jwks)
        sbx.update_network({"rules": {API_NAME: [{"transform": lambda ctx: {
            "headers": {"Authorization": f"Bearer {ctx.iam.tokens['aws']}"}}}]}})
        # survives pause/resume
        sbx.pause()
        resumed = Sandbox.connect(sbx.sandbox_id)
        before = len(lab.lines())
        assert _curl(resumed, f"https://{API_NAME}/") == f"https {lab.api_ip} auth=yes"
        (after,) = _bearers(lab, before)
        assert verify(after, jwks)[1]["sandbox_id"] == sbx.sandbox_id
        # a fork keeps the rule but not the token: the proxy refuses to send the request
        (fork,) = resumed.fork(count=1, timeout=120)
        assert isinstance(fork, Sandbox)
        made.append(fork)
        fork.commands.run(f"printf {shlex.quote(lab.hosts_file())} >> /etc/hosts", user="root")
        before = len(lab.lines())
        refused = _curl(fork, f"https://{API_NAME}/")
        assert "the iam token 'aws' named by a network rule is not defined" in refused
        assert _bearers(lab, before) == []
    finally:
        for one in made:
            one.kill()
