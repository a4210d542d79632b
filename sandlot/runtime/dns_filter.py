"""The resolver of a sandbox whose ``allowOut`` names domains.

nft redirects the sandbox's DNS (UDP 53, whatever its resolv.conf says) to this
server, bound on the slot's host-side address. Allowed names are forwarded to the
server's upstream resolvers and the A records of the answer are added to the slot's
nft set (with a timeout) before the answer goes back, so the sandbox can connect to
exactly the addresses it was told; other names get NXDOMAIN. Queries from any
address but the sandbox's own are ignored.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from .egress import EgressPolicy, domain_allowed

log = logging.getLogger(__name__)

DNS_PORT = 53
MIN_TTL_S = 300
"""Resolved addresses stay allowed at least this long (connections outlive short TTLs)."""

OnResolved = Callable[[list[str], int], None]


class DnsFilter(asyncio.DatagramProtocol):
    def __init__(self, bind_ip: str, client_ip: str, policy: EgressPolicy, on_resolved: OnResolved) -> None:
        self.bind_ip = bind_ip
        self.client_ip = client_ip
        self.policy = policy
        self.on_resolved = on_resolved
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.bind_ip, DNS_PORT))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.client_ip:
            return
        task = asyncio.ensure_future(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        reply = await self._resolve(query)
        if self.transport is not None:
            self.transport.sendto(reply.to_wire(), addr)

    async def _resolve(self, query: dns.message.Message) -> dns.message.Message:
        if len(query.question) != 1 or not domain_allowed(self.policy, query.question[0].name.to_text()):
            refused = dns.message.make_response(query)
            refused.set_rcode(dns.rcode.NXDOMAIN)
            return refused
        for upstream in self.policy.upstreams:
            try:
                answer = await dns.asyncquery.udp(query, upstream, timeout=3)
            except (dns.exception.DNSException, OSError) as exc:
                log.warning("dns upstream %s failed: %r", upstream, exc)
                continue
            ips: list[str] = []
            ttl = MIN_TTL_S
            for rrset in answer.answer:
                if rrset.rdtype == dns.rdatatype.A:
                    ips += [rdata.address for rdata in rrset]
                    ttl = max(ttl, rrset.ttl)
            if ips:
                try:
                    self.on_resolved(ips, ttl)
                except Exception:
                    log.exception("could not allow resolved addresses %s", ips)
                    break
            return answer
        failed = dns.message.make_response(query)
        failed.set_rcode(dns.rcode.SERVFAIL)
        return failed


def host_resolvers() -> tuple[str, ...]:
    """Every nameserver of the host's resolv.conf (loopback ones too: the server runs on the host)."""
    out: list[str] = []
    try:
        with open("/etc/resolv.conf") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append(parts[1])
    except OSError:
        pass
    return tuple(out)
