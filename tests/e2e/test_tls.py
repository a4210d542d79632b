"""``sandlot serve --domain`` with HTTPS from a generated local CA, used by the unmodified SDK.

The SDK gets only ``E2B_DOMAIN`` and ``E2B_API_KEY`` (no ``E2B_API_URL`` / ``E2B_SANDBOX_URL``),
so it talks to ``https://api.{domain}`` and ``https://49983-{id}.{domain}`` on port 443.
The server listens on a loopback address of its own (``127.x.y.z:443``). Name resolution is
a resolver override for the client process only: it runs in a private mount namespace
(``unshare -m``) whose ``/etc/resolv.conf`` names a wildcard DNS server this test runs on that
same loopback address (``*.{domain}`` → it), so no query ever leaves loopback. (Plain
``/etc/hosts`` lines are not enough: the SDK's Rust resolver reads the file once, before the
sandbox id is known.) The CA is trusted through ``SSL_CERT_FILE`` in that process only.
"""

from __future__ import annotations

import json
import os
import socketserver
import ssl
import threading
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import httpx
import pytest

from sandlot import ids
from tests.e2e.server import REPO, SANDLOT, Server, unique_instance, unique_subnet
from tests.e2e.server import data_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="TLS tests need root (port 443, mount namespaces)")

CA = data_dir() / "tls" / "ca.pem"
"""The server's generated CA (kept in its data dir so an operator trusts it once)."""

CLIENT = textwrap.dedent(
    """
    import json, ssl, sys
    import httpx
    from e2b import Sandbox

    ip, domain, ca = sys.argv[1], sys.argv[2], sys.argv[3]
    sbx = Sandbox.create(timeout=120)
    out = {"echo": sbx.commands.run("echo over https").stdout}
    sbx.files.write("/home/user/www/index.html", "<h1>hello browser</h1>")
    out["read"] = sbx.files.read("/home/user/www/index.html")
    sbx.commands.run("cd /home/user/www && python3 -m http.server 8000", background=True)
    sbx.commands.run("for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/8000) 2>/dev/null && exit 0; sleep 0.1; done")
    out["host"] = sbx.get_host(8000)
    page = httpx.get(f"https://{out['host']}/index.html", verify=ssl.create_default_context(cafile=ca))   # what a browser trusting the CA does
    out["page"] = [page.status_code, page.text]
    out["running"] = sbx.is_running()
    out["listed"] = sbx.sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()]
    sbx.kill()
    out["running_after_kill"] = sbx.is_running()
    print("RESULT " + json.dumps(out))
    """
)


class TlsServer(Server):
    """``sandlot serve --domain`` on ``ip:443`` with a generated CA; health is polled over HTTPS."""

    ip: str = ""

    @property
    def url(self) -> str:
        return f"https://{self.ip}:{self.port}"

    def start(self, timeout_s: float = 300) -> None:
        self.track()   # its sandboxes (warm pool) go with the session's final clean-up
        log = open(self.workdir / "server.log", "ab")
        self.process = subprocess.Popen([str(SANDLOT), "serve", "--log-level", "info"], env=self.env(),
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sandlot serve exited early:\n{self.log_tail()}")
            try:   # the certificate names the domain, not this IP: trust is checked by the SDK below
                if httpx.get(f"{self.url}/health", timeout=1, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sandlot serve did not become healthy:\n{self.log_tail()}")


class WildcardDns(socketserver.BaseRequestHandler):
    """A for ``domain`` and ``*.domain`` → the server's IP; NXDOMAIN for anything else."""

    domain = ""
    ip = ""

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name.to_text(omit_final_dot=True).lower()
        if name == self.domain or name.endswith("." + self.domain):
            if query.question[0].rdtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", self.ip))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(reply.to_wire(), self.client_address)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    pid = os.getpid()
    ip = f"127.{80 + pid % 100}.{(pid // 100) % 250 + 1}.{(pid // 25000) % 250 + 1}"
    domain = f"sbx{pid}.sandlot.test"
    srv = TlsServer(workdir=tmp_path_factory.mktemp("sandlot-tls"), api_key=ids.new_api_key(), port=443,
                    instance=unique_instance("s"), subnet=unique_subnet(6),
                    extra_env={"SANDLOT_HOST": ip, "SANDLOT_DOMAIN": domain})
    srv.ip = ip
    WildcardDns.domain, WildcardDns.ip = domain, ip
    resolver = socketserver.ThreadingUDPServer((ip, 53), WildcardDns)
    threading.Thread(target=resolver.serve_forever, daemon=True).start()
    try:
        srv.start()
        yield srv
        srv.stop()
    finally:
        resolver.shutdown()
        resolver.server_close()


def test_sdk_over_https_without_sandbox_url(tls_server: TlsServer, tmp_path: Path) -> None:
    domain = tls_server.extra_env["SANDLOT_DOMAIN"]
    log = (tls_server.workdir / "server.log").read_text()
    ca = CA
    assert str(ca) in log and f"api.{domain}" in log         # trust + DNS instructions were printed
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes() + ca.read_bytes())
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {tls_server.ip}\n")
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update({"E2B_DOMAIN": domain, "E2B_API_KEY": tls_server.api_key, "SSL_CERT_FILE": str(bundle),
                "PYTHONPATH": str(REPO)})
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
         str(resolv), sys.executable, str(script), tls_server.ip, domain, str(ca)],
        env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:] + tls_server.log_tail()
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["echo"] == "over https\n"
    assert result["read"] == "<h1>hello browser</h1>"
    assert result["host"].endswith(f".{domain}") and result["host"].startswith("8000-")
    assert result["page"] == [200, "<h1>hello browser</h1>"]
    assert result["running"] is True
    assert result["listed"] is True
    assert result["running_after_kill"] is False


def test_plain_http_is_refused_and_wrong_name_fails_verification(tls_server: TlsServer) -> None:
    domain = tls_server.extra_env["SANDLOT_DOMAIN"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{tls_server.ip}:443/health", timeout=3)
    ca = ssl.create_default_context(cafile=str(CA))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        httpx.get(f"https://{tls_server.ip}/health", verify=ca, timeout=3)   # an IP is not *.{domain}
    # the right name verifies (SNI + Host through a resolver override at the transport level)
    transport = httpx.HTTPTransport(verify=ca)
    with httpx.Client(transport=transport) as client:
        request = client.build_request("GET", f"https://{tls_server.ip}/health", headers={"Host": f"api.{domain}"},
                                       extensions={"sni_hostname": f"api.{domain}"})
        assert client.send(request).status_code == 200
