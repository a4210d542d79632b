"""HTTPS for ``serve --domain``: the operator's certificate, or one from a local CA we make.

The SDK without ``E2B_SANDBOX_URL`` talks to ``https://api.{domain}`` and
``https://49983-{id}.{domain}``, so the certificate must cover ``domain`` and
``*.domain``. The generated CA (``<data_dir>/tls/ca.pem``) is kept across restarts so
an operator trusts it once; leaf certificates are per domain and re-made when close
to expiry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)


class TlsError(Exception):
    """The TLS set-up cannot work (missing files, a certificate for another name...)."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None
    """The generated CA clients must trust; ``None`` for an operator's certificate."""


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sandlot"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Sandlot local CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _leaf_is_fresh(path: Path, ca: x509.Certificate) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.issuer == ca.subject and cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.timezone.utc)


def generated(directory: Path, domain: str) -> TlsFiles:
    """A leaf for ``domain`` and ``*.domain`` signed by the local CA (both made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_ca(directory)
    cert_path, key_path = directory / f"{domain}.pem", directory / f"{domain}.key"
    if key_path.exists() and _leaf_is_fresh(cert_path, ca_cert):
        return TlsFiles(cert_path, key_path, directory / "ca.pem")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
    try:
        names = [x509.IPAddress(ipaddress.ip_address(domain))]
    except ValueError:
        pass
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert_path, key_path, directory / "ca.pem")


def operator_files(cert: Path, key: Path, domain: str | None) -> TlsFiles:
    """Check the operator's files exist and (when a domain is set) cover ``*.domain``."""
    for path in (cert, key):
        if not path.is_file():
            raise TlsError(f"TLS file {path} does not exist")
    if domain:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            sans = []
        if f"*.{domain}" not in sans:
            raise TlsError(f"{cert} does not cover *.{domain} (it has {sans}); sandbox hosts would fail TLS")
    return TlsFiles(cert, key, None)


def trust_instructions(files: TlsFiles, domain: str, listen_ip: str) -> str:
    """What the operator does so clients trust the generated CA and resolve the names."""
    lines = []
    if files.ca is not None:
        lines += [
            f"HTTPS certificate for {domain} and *.{domain} is signed by Sandlot's local CA: {files.ca}",
            "  trust it on this machine:   cp {0} /usr/local/share/ca-certificates/sandlot.crt && update-ca-certificates".format(files.ca),
            f"  or per process (E2B SDK):  export SSL_CERT_FILE=<bundle with {files.ca} appended>",
            "  browsers: import it as a certificate authority",
        ]
    lines += [
        f"DNS: point {domain} and *.{domain} at this server (a wildcard A record), or for tests /etc/hosts lines:",
        f"  {listen_ip} api.{domain}",
        f"  {listen_ip} 49983-<sandboxID>.{domain}   (one line per sandbox and port: /etc/hosts has no wildcards)",
    ]
    return "\n".join(lines)
