"""Where a proxied connection may go: the same floor and policy nft applies to direct traffic.

Traffic redirected to the proxy arrives on the host's input path, so the forward chain's
rules (runtime/network.py: blocked and private ranges, the host, other sandboxes, the
sandbox's own allow/deny lists) never see it; the proxy asks this module instead, for the
address it is about to dial (after its own DNS resolution, never the sandbox's word).
"""
from __future__ import annotations

import errno
import ipaddress
import socket

from sandlot.runtime.egress import EgressPolicy, domain_allowed
from sandlot.runtime.network import BLOCKED_DESTINATIONS, PRIVATE_DESTINATIONS

_BLOCKED = tuple(ipaddress.IPv4Network(c) for c in BLOCKED_DESTINATIONS)
_PRIVATE = tuple(ipaddress.IPv4Network(c) for c in PRIVATE_DESTINATIONS)


def is_host_address(ip: str) -> bool:
    """One of this host's own addresses (binding to it succeeds), e.g. a veth's host side."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
    return True


class Destinations:
    def __init__(self, sandbox_subnet: str, allow_private: tuple[str, ...] | list[str]) -> None:
        self.subnet = ipaddress.IPv4Network(sandbox_subnet, strict=False)
        self.allow_private = tuple(ipaddress.IPv4Network(c, strict=False) for c in allow_private)

    def floor(self, ip: str) -> str | None:
        """Why no sandbox may reach ``ip`` whatever its policy says, or ``None``."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return "not an IP address"
        if addr.version != 4:
            return "IPv6 destinations are closed to sandboxes"
        if addr in self.subnet:
            return "another sandbox"
        if any(addr in net for net in _BLOCKED):
            return "a loopback, multicast or reserved address"
        if is_host_address(ip):   # before the operator's allow-list: it opens LAN hosts, never this one
            return "the host itself"
        if any(addr in net for net in self.allow_private):
            return None
        if any(addr in net for net in _PRIVATE):
            return "a private or link-local address"
        return None

    def allowed(self, policy: EgressPolicy, ip: str, name: str | None) -> str | None:
        """Why this sandbox may not reach ``ip`` (named ``name``), or ``None``: the floor, then
        E2B's rule that allow (CIDR, or the domain ``name``) beats deny."""
        why = self.floor(ip)
        if why is not None:
            return why
        addr = ipaddress.IPv4Address(ip)
        if any(addr in ipaddress.IPv4Network(c) for c in policy.allow):
            return None
        if name is not None and domain_allowed(policy, name):
            return None
        if any(addr in ipaddress.IPv4Network(c) for c in policy.deny):
            return "denied by the sandbox's network policy"
        return None
