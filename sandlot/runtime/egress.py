"""A sandbox's egress policy (E2B's ``allow_internet_access`` / ``network``) and its nft form.

Each slot ``n`` owns a chain ``eg<n>`` that the table's forward chain jumps to through
the ``egress`` verdict map (keyed by the host-side veth), plus three sets: ``eg<n>a``
(allowed CIDRs), ``eg<n>d`` (denied CIDRs) and ``eg<n>n`` (addresses the DNS filter
resolved for allowed domain names, with timeouts). Allow wins over deny, as in E2B.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

ALL_IPV4 = "0.0.0.0/0"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class PolicyError(ValueError):
    """The requested policy cannot be expressed; the message is shown to the client."""


@dataclass(frozen=True)
class EgressPolicy:
    allow: tuple[str, ...] = ()          # CIDRs
    deny: tuple[str, ...] = ()           # CIDRs
    domains: tuple[str, ...] = ()        # exact names or "*.suffix"
    dns_servers: tuple[str, ...] = ()    # IPs always allowed when domains are used
    upstreams: tuple[str, ...] = field(default=(), compare=False)
    """Resolvers the DNS filter forwards allowed names to (server setting, not policy)."""
    http_port: int = 0
    https_port: int = 0
    """The egress proxy's listeners new TCP connections to ports 80/443 are redirected to
    (``network.rules``; 0 = not redirected)."""
    tunnel_port: int = 0
    """The egress proxy's listener every other new TCP connection is redirected to
    (``network.egressProxy``; 0 = not redirected)."""

    @property
    def proxied(self) -> bool:
        return bool(self.http_port or self.https_port or self.tunnel_port)

    @property
    def is_open(self) -> bool:
        return not (self.allow or self.deny or self.domains)


def _cidr(text: str) -> str | None:
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    if net.version != 4:
        raise PolicyError(f"Invalid network rule {text!r}: only IPv4 addresses and CIDRs are supported")
    return str(net)


def _domain(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if name == "*" or not all(_LABEL.match(label) for label in labels):
        raise PolicyError(f"Invalid network rule {text!r}: expected an IPv4 address, a CIDR or a domain name")
    return name


def parse_policy(allow_internet_access: bool | None, network: dict[str, Any] | None) -> EgressPolicy:
    """Validate the wire form (camelCase ``network`` dict as stored) into a policy."""
    network = network or {}
    allow: list[str] = []
    domains: list[str] = []
    for entry in network.get("allowOut") or []:
        cidr = _cidr(entry)
        if cidr is not None:
            allow.append(cidr)
        else:
            domains.append(_domain(entry))
    deny: list[str] = []
    for entry in network.get("denyOut") or []:
        cidr = _cidr(entry)
        if cidr is None:
            raise PolicyError(f"Invalid denyOut entry {entry!r}: domain names are not supported for deny rules")
        deny.append(cidr)
    if allow_internet_access is False and ALL_IPV4 not in deny:
        deny.append(ALL_IPV4)
    if domains and ALL_IPV4 not in deny:
        raise PolicyError("Domain names in allowOut require denyOut to contain 0.0.0.0/0 (or allow_internet_access=false)")
    dns_servers: list[str] = []
    if domains:
        for entry in network.get("dnsServers") or []:
            cidr = _cidr(entry)
            if cidr is None or not cidr.endswith("/32"):
                raise PolicyError(f"Invalid dnsServers entry {entry!r}: expected an IPv4 address")
            dns_servers.append(cidr)
    return EgressPolicy(tuple(allow), tuple(deny), tuple(dict.fromkeys(domains)), tuple(dns_servers))


def domain_allowed(policy: EgressPolicy, name: str) -> bool:
    """Exact names match themselves; ``*.suffix`` matches subdomains at any depth, not the apex."""
    name = name.lower().rstrip(".")
    for rule in policy.domains:
        if rule.startswith("*."):
            if name.endswith(rule[1:]):
                return True
        elif name == rule:
            return True
    return False


def chain_name(index: int) -> str:
    return f"eg{index}"


def proxy_commands(table: str, index: int, veth: str, policy: EgressPolicy) -> list[str]:
    """Slot ``index``'s nat chain ``px<n>``: its new TCP connections to the egress proxy."""
    c = f"px{index}"
    t = f"inet {table}"
    lines = [f"add chain {t} {c}", f"flush chain {t} {c}"]
    if policy.http_port:
        lines.append(f"add rule {t} {c} tcp dport 80 redirect to :{policy.http_port}")
    if policy.https_port:
        lines.append(f"add rule {t} {c} tcp dport 443 redirect to :{policy.https_port}")
    if policy.tunnel_port:
        lines.append(f"add rule {t} {c} meta l4proto tcp redirect to :{policy.tunnel_port}")
    lines += [f'add element {t} proxy {{ "{veth}" : jump {c} }}', f'add element {t} proxy_ifs {{ "{veth}" }}']
    if not policy.proxied:
        lines += [f'delete element {t} proxy {{ "{veth}" }}', f'delete element {t} proxy_ifs {{ "{veth}" }}']
    return lines


def policy_commands(table: str, index: int, veth: str, policy: EgressPolicy) -> str:
    """One libnftables transaction that (re)writes slot ``index``'s chain and sets."""
    c = chain_name(index)
    t = f"inet {table}"
    lines = [
        f"add chain {t} {c}",
        f"flush chain {t} {c}",
        f"add set {t} {c}a {{ type ipv4_addr; flags interval; auto-merge; }}",
        f"flush set {t} {c}a",
        f"add set {t} {c}d {{ type ipv4_addr; flags interval; auto-merge; }}",
        f"flush set {t} {c}d",
        f"add set {t} {c}n {{ type ipv4_addr; flags timeout; }}",
        f"flush set {t} {c}n",
    ]
    allow = list(policy.allow) + list(policy.dns_servers)
    if allow:
        lines.append(f"add element {t} {c}a {{ {', '.join(allow)} }}")
    if policy.deny:
        lines.append(f"add element {t} {c}d {{ {', '.join(policy.deny)} }}")
    if not policy.is_open:
        lines += [
            f"add rule {t} {c} ip daddr @{c}a accept",
            f"add rule {t} {c} ip daddr @{c}n accept",
            f"add rule {t} {c} ip daddr @{c}d reject with icmpx admin-prohibited",
        ]
    lines.append(f'add element {t} egress {{ "{veth}" : jump {c} }}')
    lines += proxy_commands(table, index, veth, policy)
    if policy.domains:
        lines.append(f'add element {t} dns_ifs {{ "{veth}" }}')
    return "\n".join(lines) + "\n"
