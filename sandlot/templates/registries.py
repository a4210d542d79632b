"""Which image references a tenant may pull, and from which registries.

A tenant's ``fromImage`` (E2B) or ``docker_image`` (Prime) names a host the server's
skopeo then connects to with the server's network position. So: only Docker registry
references (the ``docker://`` transport — never ``oci:``, ``dir:``, ``docker-archive:``,
``containers-storage:`` … which read the host's own files or storage), and a registry
whose name or address is loopback, private, link-local, ULA, shared, reserved or
multicast only when the operator allow-listed it (``SANDLOT_REGISTRY_ALLOW_PRIVATE``);
those allow-listed registries are then spoken to over plain HTTP, everything else over
verified HTTPS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
"""The only digest form accepted anywhere a registry's answer could name a path or a key."""

TRANSPORTS = ("oci", "oci-archive", "dir", "docker-archive", "docker-daemon", "containers-storage", "sif",
              "tarball", "ostree", "docker")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
HOSTNAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
MAX_REFERENCE = 512
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[Any, Any, Any, Any, tuple[Any, ...]]  # socket.getaddrinfo's (family, type, proto, name, sockaddr)


class ReferenceError(ValueError):  # shadows the builtin on purpose: the module's own error, not weakref's
    """A reference the server refuses to pull (answered 400, or fails the build naming ``base``)."""


@dataclass(frozen=True)
class Reference:
    registry: str
    """``host`` or ``host:port`` (IPv6 in brackets); ``docker.io`` for Docker Hub."""
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        return _split_host(self.registry)[0]

    @property
    def port(self) -> int | None:
        return _split_host(self.registry)[1]

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def by_digest(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"


def _split_host(registry: str) -> tuple[str, int | None]:
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = registry.partition(":")
    return host, int(port) if sep else None


def parse(image: str) -> Reference:
    """A Docker registry reference (``busybox`` → ``docker.io/library/busybox:latest``)."""
    if not image or len(image) > MAX_REFERENCE or any(c.isspace() or ord(c) < 32 for c in image):
        raise ReferenceError("image reference is empty, too long or has whitespace")
    if image.startswith("docker://"):
        image = image[len("docker://"):]
    transport, colon, after = image.partition(":")
    if colon and transport.lower() in TRANSPORTS and (transport.lower() != "docker" or not TAG.match(after)):
        raise ReferenceError(f"'{transport}:' references are not pulled: only registry images (the docker:// "
                             "transport, e.g. 'registry.example.com/team/app:1') are")
    if "://" in image:
        raise ReferenceError("an image reference is 'registry/repository:tag', not a URL")
    name, _, digest = image.partition("@")
    if digest and not DIGEST.match(digest):
        raise ReferenceError(f"image digest must be 'sha256:' and 64 lowercase hex characters, got '{digest[:80]}'")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, rest
        _check_registry_name(registry)
    else:
        registry, path = "docker.io", name
    last = path.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not TAG.match(tag):
            raise ReferenceError(f"invalid image tag '{tag[:130]}'")
    if not PATH.match(path):
        raise ReferenceError(f"invalid image repository '{path[:200]}': lowercase letters, digits, '.', '_', '-' and '/'")
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return Reference(registry, path, tag or (None if digest else "latest"), digest or None)


def _check_registry_name(registry: str) -> None:
    try:
        host, port = _split_host(registry)
    except ValueError:
        raise ReferenceError(f"invalid registry '{registry[:100]}'") from None
    if port is not None and not 0 < port < 65536:
        raise ReferenceError(f"invalid registry port in '{registry[:100]}'")
    if registry.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ReferenceError(f"invalid registry '{registry[:100]}'") from None
    elif not HOSTNAME.match(host):
        raise ReferenceError(f"invalid registry host '{host[:100]}'")


def _through_proxy(host: str) -> bool:
    return bool(urllib.request.getproxies().get("https")) and not urllib.request.proxy_bypass(host)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class RegistryPolicy:
    """The operator's allow-list of non-public registries (``host``, ``host:port`` or CIDR)."""

    def __init__(self, allow: list[str]) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            try:
                _check_registry_name(entry)
            except ReferenceError:
                raise ValueError(f"SANDLOT_REGISTRY_ALLOW_PRIVATE: {entry!r} is not a host, host:port or CIDR") from None
            self.names.add(entry)

    def _allowed(self, registry: str, host: str, addresses: list[Address]) -> bool:
        if registry.lower() in self.names or host.lower() in self.names:
            return True
        return bool(addresses) and all(any(a in net for net in self.networks if net.version == a.version)
                                       for a in addresses)

    @property
    def no_proxy(self) -> list[str]:
        """The allow-list as ``NO_PROXY`` entries (Go understands hosts, host:port and CIDRs)."""
        return sorted(self.names) + [str(net) for net in self.networks]

    def vet(self, host: str, port: int | None, addresses: list[Address], what: str = "registry") -> bool:
        """``True`` for an allow-listed private destination, ``False`` for a public one,
        ``ReferenceError`` otherwise: every address must be public, or all be allow-listed."""
        registry = host if port is None else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        private = [a for a in addresses if not _public(a)]
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            private = private or addresses
        if not private and addresses:
            return False
        if self._allowed(registry, host, addresses):
            return True
        shown = ", ".join(str(a) for a in private[:3]) or "no address"
        raise ReferenceError(f"{what} '{registry}' is at {shown}, a loopback/private/link-local address; "
                             "this server only pulls from such registries when its operator allow-lists them "
                             "(SANDLOT_REGISTRY_ALLOW_PRIVATE)")

    def check(self, ref: Reference) -> bool:
        """``True`` when the registry is an allow-listed private one (plain HTTP), ``False`` for a
        public one (verified HTTPS); ``ReferenceError`` otherwise. Resolves the name: the literal
        and every address it resolves to must be public (or all be allow-listed)."""
        host = ref.host
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, ref.port or 443, type=socket.SOCK_STREAM)
            except OSError as exc:
                if host.lower() == "localhost" or host.lower().endswith(".localhost"):
                    infos = [(socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 0))]
                elif _through_proxy(host):
                    return False  # the operator's HTTPS proxy resolves and connects, from its own network
                else:
                    raise ReferenceError(f"registry host '{host}' does not resolve: {exc.strerror or exc}") from None
            addresses = addresses_of(infos)
        return self.vet(host, ref.port, addresses)


def addresses_of(infos: Iterable[AddrInfo]) -> list[Address]:
    """``getaddrinfo`` results as addresses (scope ids dropped), sorted."""
    return sorted({ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}, key=str)
