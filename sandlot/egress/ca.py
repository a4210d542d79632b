"""The per-server CA the egress proxy signs its interception certificates with.

Kept in ``<data dir>/egress-ca/``: ``ca.crt`` (public, also appended to the host's CA bundle
in ``bundle-<digest>.crt``, which sandboxes get as their system bundle) and ``ca.key``
(0600, never mounted into a sandbox). A bundle file is named by its content and never
rewritten or deleted: sandboxes bind-mount it, and a running or paused sandbox whose mounted
file was replaced would hold a deleted inode that CRIU can't checkpoint or restore
("Can't re-create deleted file"); servers sharing a data dir start at different times.
Leaf certificates are minted per server name on first use and kept in a small in-memory
cache; they share one key made at start.
"""
from __future__ import annotations

import datetime
import fcntl
import functools
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections import OrderedDict
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DIR = "egress-ca"
LEAF_CACHE = 512
LEAF_DAYS = 30


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically, never readable by others in between (mode set before the content lands)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bundle_file(data_dir: Path, content: bytes) -> Path:
    return data_dir / CA_DIR / f"bundle-{hashlib.sha256(content).hexdigest()[:16]}.crt"


def current_bundle(data_dir: Path, base_bundle: Path) -> Path | None:
    """The bundle file for the host's current bundle plus this data dir's CA, or ``None``
    while no server has made one (the CA is made at a server's start). Called per boot:
    the files are read again only when one of them changed."""
    try:
        ca, host = (data_dir / CA_DIR / "ca.crt").stat(), base_bundle.stat()
    except OSError:
        return None
    path = _bundle_for(data_dir, base_bundle, (ca.st_ino, ca.st_mtime_ns, host.st_ino, host.st_mtime_ns))
    return path if path is not None and path.exists() else None


@functools.lru_cache(maxsize=8)
def _bundle_for(data_dir: Path, base_bundle: Path, _stamp: tuple[int, ...]) -> Path | None:
    try:
        cert = (data_dir / CA_DIR / "ca.crt").read_bytes()
        base = base_bundle.read_bytes()
    except OSError:
        return None
    if base and not base.endswith(b"\n"):
        base += b"\n"
    return bundle_file(data_dir, base + cert)


class EgressCA:
    def __init__(self, data_dir: Path, base_bundle: Path | None) -> None:
        self.dir = data_dir / CA_DIR
        self.cert_path = self.dir / "ca.crt"
        self.key_path = self.dir / "ca.key"
        self.bundle_path = self.dir / "bundle.crt"   # replaced by the content-named file in _write_bundle
        self.base_bundle = base_bundle
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._load_or_create()
        self._write_bundle()

    def _load_or_create(self) -> None:
        """Under a lock: servers sharing a data dir start at once and must agree on one CA."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._load_or_create_locked()

    def _load_or_create_locked(self) -> None:
        if self.key_path.exists() and self.cert_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.key_path}: an EC key is expected")
            self._key = key
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Sandlot egress CA {secrets.token_hex(4)}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        write_file(self.key_path, self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), 0o600)
        write_file(self.cert_path, self.cert.public_bytes(serialization.Encoding.PEM), 0o644)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _write_bundle(self) -> None:
        base = b""
        if self.base_bundle is not None and self.base_bundle.exists():
            base = self.base_bundle.read_bytes()
            if base and not base.endswith(b"\n"):
                base += b"\n"
        data = base + self.cert_pem
        self.bundle_path = bundle_file(self.dir.parent, data)
        if not self.bundle_path.exists():
            write_file(self.bundle_path, data, 0o644)

    def context_for(self, name: str) -> ssl.SSLContext:
        """A server-side TLS context whose certificate is for ``name`` (a DNS name or an IP)."""
        ctx = self._contexts.get(name)
        if ctx is not None:
            self._contexts.move_to_end(name)
            return ctx
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        cert_pem = self._leaf(name)
        with tempfile.TemporaryDirectory() as tmp:   # ssl loads chains from files only
            chain, key = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
            chain.write_bytes(cert_pem + self.cert_pem)
            key.write_bytes(self._leaf_key_pem)
            ctx.load_cert_chain(chain, key)
        self._contexts[name] = ctx
        while len(self._contexts) > LEAF_CACHE:
            self._contexts.popitem(last=False)
        return ctx

    def _leaf(self, name: str) -> bytes:
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self.cert.subject).public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)
