"""Test hosts for the egress proxy, in a network namespace the test creates (never the internet).

Two addresses: ``api`` (``API_NAME``) and ``other`` (``OTHER_NAME``), each serving HTTP on 80
and HTTPS on 443 with a certificate from a test CA (``ca.pem``), a DNS server on ``api``
answering both names, a SOCKS5 server (RFC 1929 username/password) on ``api:1080`` (and inside
TLS, with the test CA's certificate, on ``api:1443``) and a
TCP echo on ``api:7000``. Every HTTP(S) request is logged with its Authorization header and
every SOCKS5 connect with its destination (the canary file ``lab.log``); responses only say
whether an Authorization header came, never its value.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.server import unique_subnet

API_NAME, OTHER_NAME = "api.egress.test", "other.egress.test"
SOCKS_PORT, SOCKS_TLS_PORT, ECHO_PORT = 1080, 1443, 7000
SOCKS_USER, SOCKS_PASSWORD = "lab-user", "lab-password-1"

_PROGRAM = textwrap.dedent(
    """
    import asyncio, json, socket, socketserver, ssl, struct, sys, threading
    from http.server import BaseHTTPRequestHandler
    import dns.message, dns.rcode, dns.rrset

    log_path, api_ip, other_ip, cert, key, names_json, user, password = sys.argv[1:9]
    log = open(log_path, "a", buffering=1)
    names = json.loads(names_json)

    class Hello(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            auth = self.headers.get("Authorization")
            log.write(f"{scheme} {self.server.server_address[0]} host={self.headers.get('Host')} "
                      f"auth={auth} x-extra={self.headers.get('X-Extra')}\\n")
            body = f"{scheme} {self.server.server_address[0]} auth={'yes' if auth else 'no'}".encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args): pass

    class Http(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for ip in (api_ip, other_ip):
        threading.Thread(target=Http((ip, 80), Hello).serve_forever, daemon=True).start()
        tls = Http((ip, 443), Hello)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()

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
    threading.Thread(target=socketserver.UDPServer((api_ip, 53), Dns).serve_forever, daemon=True).start()

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data); await w.drain()
        finally:
            w.close()

    async def socks(r, w):   # RFC 1928 CONNECT with RFC 1929 username/password, nothing else
        ver, n = await r.readexactly(2)
        methods = await r.readexactly(n)
        if 2 not in methods:
            w.write(b"\\x05\\xff"); w.close(); return
        w.write(b"\\x05\\x02")
        _, ulen = await r.readexactly(2); u = (await r.readexactly(ulen)).decode()
        plen = (await r.readexactly(1))[0]; p = (await r.readexactly(plen)).decode()
        if (u, p) != (user, password):
            log.write("socks bad-credentials\\n"); w.write(b"\\x01\\x01"); w.close(); return
        w.write(b"\\x01\\x00")
        _, cmd, _, atyp = await r.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await r.readexactly(4))
        elif atyp == 3:
            host = (await r.readexactly((await r.readexactly(1))[0])).decode()
            host = names.get(host, host)
        else:
            w.close(); return
        port = struct.unpack("!H", await r.readexactly(2))[0]
        log.write(f"socks {host}:{port}\\n")
        ur, uw = await asyncio.open_connection(host, port)
        w.write(b"\\x05\\x00\\x00\\x01" + socket.inet_aton("0.0.0.0") + b"\\x00\\x00")
        await asyncio.gather(pipe(r, uw), pipe(ur, w), return_exceptions=True)

    async def echo(r, w):
        while data := await r.read(65536):
            w.write(b"echo:" + data); await w.drain()
        w.close()

    async def main():
        await asyncio.start_server(socks, api_ip, %d)
        await asyncio.start_server(socks, api_ip, %d, ssl=ctx)   # SOCKS5 inside TLS
        await asyncio.start_server(echo, api_ip, %d)
        await asyncio.Event().wait()
    asyncio.run(main())
    """
    % (SOCKS_PORT, SOCKS_TLS_PORT, ECHO_PORT)
)


@dataclass
class EgressLab:
    api_ip: str
    other_ip: str
    host_ip: str
    ca_pem: Path
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def hosts_file(self) -> str:
        return f"{self.api_ip} {API_NAME}\n{self.other_ip} {OTHER_NAME}\n"


def _make_certs(workdir: Path, ips: list[str]) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sandlot egress test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(API_NAME), x509.DNSName(OTHER_NAME)]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, API_NAME)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, cert_pem, key_pem = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


def _ip(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", *args], input=stdin, text=True, check=True)


@contextmanager
def egress_lab(workdir: Path) -> Iterator[EgressLab]:
    net = ".".join(unique_subnet().split(".")[:2]) + ".254"   # 10.X.254.0/24: no test server's /22, not labhost's
    ns, veth = f"sleg{os.getpid()}", f"eg{os.getpid() % 1_000_000}"
    lab = EgressLab(f"{net}.2", f"{net}.3", f"{net}.1", workdir / "ca.pem", workdir / "lab.log")
    _, cert, key = _make_certs(workdir, [lab.api_ip, lab.other_ip])
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    proc = None
    try:
        _ip("-batch", "-", stdin=f"netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\n"
                                 f"addr add {lab.host_ip}/24 dev {veth}\nlink set {veth} up\n")
        _ip("-n", ns, "-batch", "-", stdin=f"link set lo up\naddr add {lab.api_ip}/24 dev eth0\n"
                                           f"addr add {lab.other_ip}/24 dev eth0\nlink set eth0 up\n")
        import json
        names = json.dumps({API_NAME: lab.api_ip, OTHER_NAME: lab.other_ip})
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _PROGRAM, str(lab.log), lab.api_ip,
                                 lab.other_ip, str(cert), str(key), names, SOCKS_USER, SOCKS_PASSWORD])
        for _ in range(100):
            probe = subprocess.run(["curl", "-s", "-m", "1", "--cacert", str(lab.ca_pem), "--resolve",
                                    f"{API_NAME}:443:{lab.api_ip}", f"https://{API_NAME}/"], capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        yield lab
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", veth], stderr=subprocess.DEVNULL)


def self_signed(name: str) -> tuple[str, str]:
    """A self-signed certificate and key (PEM) for ``name``: an in-sandbox TLS service's."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())
