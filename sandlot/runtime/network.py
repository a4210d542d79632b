"""Sandbox networking: a pool of pre-made netns + veth /30s and one nftables table.

Naming (so a restarted server can find and clean things):
  * netns ``sl-<n>`` (bind-mounted at ``/run/netns/sl-<n>``, like ``ip netns``)
  * host-side veth ``slv<n>``; the peer inside the netns is ``eth0``
  * slot ``n`` owns the /30 ``subnet + 4n``: host ``.1``, sandbox ``.2`` (relative)
  * the sandbox's ``eth0`` has a MAC derived from its IP (``02:53`` + the 4 address bytes)
  * nftables table ``inet sandlot`` (rules match ``iifname "slv*"``); a sandbox with
    an egress policy gets its own chain, jumped to through the ``egress`` verdict map
    keyed by its veth (``runtime/egress.py``); one with domain rules also gets a DNS
    filter on its host-side address (``runtime/dns_filter.py``)
  * table ``arp sandlot``: with the ``antispoof`` chain, a veth accepts frames only with
    its own sandbox's MAC and IP (the ``own`` sets), so a sandbox with ``CAP_NET_RAW``
    cannot speak as a neighbour or the host
  * private and special ranges (``PRIVATE_DESTINATIONS``) are unreachable unless the
    operator allow-lists them (``SANDLOT_EGRESS_ALLOW_PRIVATE``); a sandbox's own
    ``allowOut`` cannot open them (the ``floor`` chain runs before its policy)

The nft table is managed through libnftables (Debian's ``python3-nftables``).
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import ipaddress
import logging
import os
import re
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dns_filter import DNS_PORT, DnsFilter
from .egress import ALL_IPV4, EgressPolicy, chain_name, policy_commands

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "sl-"
VETH_PREFIX = "slv"
TABLE = "sandlot"
BASE_CHAINS = ("antispoof", "input", "forward", "floor", "prerouting", "postrouting")
"""Replaced at every start (``floor`` after ``forward``, which jumps to it)."""
BLOCKED_DESTINATIONS = ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")
"""Never a destination: "this network", loopback, multicast, reserved (and broadcast)."""
PRIVATE_DESTINATIONS = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "100.64.0.0/10",                                   # carrier-grade NAT (Alibaba's metadata 100.100.100.200)
    "169.254.0.0/16",                                  # link-local: cloud metadata at 169.254.169.254
    "168.63.129.16/32",                                # Azure's wire server
)
"""Closed to sandboxes unless the operator allow-lists a CIDR (a LAN registry, a proxy).
The host's own addresses and other sandboxes are closed by the input/forward chains."""
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def import_nftables() -> Any:
    """Import Debian's python3-nftables, adding its dist-packages dir only if needed."""
    try:
        import nftables  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        d = "/usr/lib/python3/dist-packages"
        if d not in sys.path:
            sys.path.append(d)
        import nftables  # type: ignore[import-not-found,unused-ignore]
    return nftables


@dataclass
class NetSlot:
    index: int
    netns: str
    veth: str
    host_ip: str
    sandbox_ip: str
    prefixlen: int = 30

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


class NetworkError(Exception):
    pass


class Network:
    def __init__(self, subnet: str = "10.213.0.0/16", pool_size: int = 4, *,
                 prefix: str = "sl", table: str = TABLE, allow_private: tuple[str, ...] = (),
                 resolvers: tuple[str, ...] | None = None) -> None:
        self.netns_prefix = f"{prefix}-"
        self.veth_prefix = f"{prefix}v"
        self.table = table
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.version != 4 or self.subnet.prefixlen > 30:
            raise ValueError("sandbox subnet must be IPv4 and at least a /30")
        self.max_slots = self.subnet.num_addresses // 4
        self.pool_size = pool_size
        self._pool: asyncio.Queue[NetSlot] = asyncio.Queue()
        self._reserved: set[int] = set()      # slot indexes in the pool or being made
        self._refill_task: asyncio.Task[None] | None = None
        self._refill_event = asyncio.Event()
        self._closing = False
        self._nft: Any = None   # nftables.Nftables, made on first use
        self._old_ip_forward: str | None = None
        self._started = False
        self._policies: dict[int, EgressPolicy] = {}   # slots whose chain is non-empty
        self._default: set[int] = set()
        """Slots this server has put in the default state (open, no DNS filter, nothing else): an
        open policy for one of them (every create's, unless it sets egress rules) needs no nft
        transaction, which costs milliseconds of libnftables on a create's request path."""
        self._dns_filters: dict[int, DnsFilter] = {}
        self.allow_private = tuple(str(ipaddress.IPv4Network(c, strict=False)) for c in allow_private)
        """Operator's CIDRs exempt from ``PRIVATE_DESTINATIONS`` (``SANDLOT_EGRESS_ALLOW_PRIVATE``)."""
        self.resolvers = tuple(dict.fromkeys(
            r for r in (resolvers if resolvers is not None else host_nameservers())
            if ipaddress.ip_address(r).version == 4))
        """The sandboxes' resolv.conf servers: port 53 on them stays open even when private."""

    # --- slots ------------------------------------------------------------------------

    def slot(self, index: int) -> NetSlot:
        base = int(self.subnet.network_address) + 4 * index
        return NetSlot(index, f"{self.netns_prefix}{index}", f"{self.veth_prefix}{index}",
                       str(ipaddress.IPv4Address(base + 1)), str(ipaddress.IPv4Address(base + 2)))

    def own_element(self, s: NetSlot, mac: str | None = None) -> str:
        """``veth . MAC . IP``: the one source a slot's veth accepts (nft ``own`` sets)."""
        return f'"{s.veth}" . {mac or sandbox_mac(s.sandbox_ip)} . {s.sandbox_ip}'

    def existing_indexes(self) -> set[int]:
        out = set()
        try:
            for name in os.listdir(NETNS_DIR):
                m = re.fullmatch(rf"{re.escape(self.netns_prefix)}(\d+)", name)
                if m:
                    out.add(int(m.group(1)))
        except FileNotFoundError:
            pass
        return out

    def existing_veth_indexes(self) -> set[int]:
        """Host-side veths; they can outlive a deleted netns for a moment (the kernel
        tears namespaces down asynchronously), so their slots are not reused yet."""
        out = set()
        # the links of this process's network namespace (``/sys/class/net`` shows the namespace
        # sysfs was mounted in: the host's, for a node agent started with ``nsenter --net``)
        for _index, name in socket.if_nameindex():
            m = re.fullmatch(rf"{re.escape(self.veth_prefix)}(\d+)", name)
            if m:
                out.add(int(m.group(1)))
        return out

    def _free_index(self) -> int:
        used = self.existing_indexes() | self.existing_veth_indexes() | self._reserved
        for i in range(self.max_slots):
            if i not in used:
                return i
        raise NetworkError("sandbox subnet exhausted")

    async def _ip(self, *args: str, stdin: str | None = None) -> None:
        proc = await asyncio.create_subprocess_exec(
            IP, *args, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate(stdin.encode() if stdin else None)
        if proc.returncode != 0:
            raise NetworkError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")

    async def make_slot(self, index: int | None = None) -> NetSlot:
        """Create a netns with a configured veth pair (2 ``ip -batch`` processes): a free
        slot, or the given one."""
        idx = self._free_index() if index is None else index
        self._reserved.add(idx)
        s = self.slot(idx)
        try:
            await self._ip("-batch", "-", stdin=(
                f"netns add {s.netns}\n"
                f"link add {s.veth} type veth peer name eth0 address {sandbox_mac(s.sandbox_ip)} netns {s.netns}\n"
                f"addr add {s.host_ip}/{s.prefixlen} dev {s.veth}\n"
                f"link set {s.veth} up\n"))
            # no IPv6 on the host side (link-local would be a path to host services); ARP
            # answers only for the veth's own address (not the host's others)
            for knob, value in ((f"ipv6/conf/{s.veth}/disable_ipv6", "1"),
                                (f"ipv4/conf/{s.veth}/arp_ignore", "1"),
                                (f"ipv4/conf/{s.veth}/arp_announce", "2")):
                try:
                    Path(f"/proc/sys/net/{knob}").write_text(value)
                except OSError:
                    pass
            await self._ip("-n", s.netns, "-batch", "-", stdin=(
                "link set lo up\n"
                f"addr add {s.sandbox_ip}/{s.prefixlen} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {s.host_ip}\n"))
            if self._started:
                # a reused slot starts open, whatever an earlier server left; its veth now
                # accepts its own sandbox's source
                self._reset_slot(s, own=self.own_element(s))
        except BaseException:
            self._reserved.discard(idx)
            release_netns(s.netns)
            raise
        return s

    async def acquire(self) -> NetSlot:
        """Take a ready slot from the pool (or make one now if the pool is empty)."""
        try:
            s = self._pool.get_nowait()
        except asyncio.QueueEmpty:
            s = await self.make_slot()
        self._reserved.discard(s.index)
        self._refill_event.set()
        return s

    def slot_for(self, index: int) -> NetSlot:
        return self.slot(index)

    def is_reserved(self, index: int) -> bool:
        """Whether the slot is in the pool or being made (its netns is not stale)."""
        return index in self._reserved

    def unreserve(self, index: int) -> None:
        """Forget a slot's reservation (its sandbox is gone; idempotent)."""
        self._reserved.discard(index)

    # --- pool -------------------------------------------------------------------------

    async def _refill_loop(self) -> None:
        while not self._closing:
            try:
                while self._pool.qsize() < self.pool_size and not self._closing:
                    s = await self.make_slot()
                    if self._closing:
                        self._reserved.discard(s.index)
                        release_netns(s.netns)
                        return
                    self._pool.put_nowait(s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("netns pool refill failed")
                await asyncio.sleep(1.0)
            self._refill_event.clear()
            if self._pool.qsize() < self.pool_size:
                continue
            await self._refill_event.wait()

    async def warm(self) -> None:
        """Fill the pool now (the background task keeps it full later)."""
        while self._pool.qsize() < self.pool_size:
            self._pool.put_nowait(await self.make_slot())

    # --- host setup -------------------------------------------------------------------

    def _nft_cmd(self, cmd: str) -> None:
        if self._nft is None:
            nftables = import_nftables()
            self._nft = nftables.Nftables()
            self._nft.set_handle_output(False)
        rc, out, err = self._nft.cmd(cmd)
        if rc != 0:
            raise NetworkError(f"nft: {err.strip()} (for: {cmd.strip()[:200]})")

    def ruleset(self, own: list[str] | tuple[str, ...] = ()) -> str:
        """The whole table, in one transaction: base chains, the deny floor's sets (refilled
        from the settings) and the anti-spoofing sets (``own``: every live slot's element)."""
        sub = str(self.subnet)
        v = f'"{self.veth_prefix}*"'
        t = f"inet {self.table}"
        blocked = ", ".join(BLOCKED_DESTINATIONS)
        fills = [f"flush set {t} private", f"add element {t} private {{ {', '.join(PRIVATE_DESTINATIONS)} }}",
                 f"flush set {t} lan_allow", f"flush set {t} resolvers", f"flush set {t} own"]
        if self.allow_private:
            fills.append(f"add element {t} lan_allow {{ {', '.join(self.allow_private)} }}")
        if self.resolvers:
            fills.append(f"add element {t} resolvers {{ {', '.join(self.resolvers)} }}")
        if own:
            fills.append(f"add element {t} own {{ {', '.join(own)} }}")
            fills.append(f"add element arp {self.table} own {{ {', '.join(own)} }}")
        return f"""
table inet {self.table} {{
  map egress {{ type ifname : verdict; }}
  map proxy {{ type ifname : verdict; }}
  set dns_ifs {{ type ifname; }}
  set proxy_ifs {{ type ifname; }}
  set own {{ type ifname . ether_addr . ipv4_addr; }}
  set private {{ type ipv4_addr; flags interval; auto-merge; }}
  set lan_allow {{ type ipv4_addr; flags interval; auto-merge; }}
  set resolvers {{ type ipv4_addr; }}
  chain antispoof {{
    type filter hook prerouting priority raw - 10; policy accept;
    iifname {v} meta nfproto != ipv4 drop
    iifname {v} iifname . ether saddr . ip saddr != @own drop
  }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname {v} ct state established,related accept
    iifname @dns_ifs udp dport {DNS_PORT} accept
    iifname @proxy_ifs meta l4proto tcp ct status dnat accept
    iifname {v} reject with icmpx admin-prohibited
  }}
  chain floor {{
    ip daddr @lan_allow return
    ip daddr @resolvers meta l4proto {{ tcp, udp }} th dport {DNS_PORT} return
    ip daddr @private reject with icmpx admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname {v} oifname {v} reject with icmpx admin-prohibited
    iifname {v} ip saddr != {sub} drop
    iifname {v} meta nfproto ipv6 drop
    iifname {v} ip daddr {{ {blocked} }} reject with icmpx admin-prohibited
    iifname {v} jump floor
    iifname {v} iifname vmap @egress
    iifname {v} accept
    oifname {v} ct state established,related accept
    oifname {v} drop
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname @dns_ifs meta l4proto {{ tcp, udp }} th dport {DNS_PORT} redirect
    iifname {v} iifname vmap @proxy
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {sub} oifname != {v} masquerade
  }}
}}
table arp {self.table} {{
  set own {{ type ifname . ether_addr . ipv4_addr; }}
  chain antispoof {{
    type filter hook input priority filter; policy accept;
    iifname {v} iifname . ether saddr . arp saddr ip != @own drop
    iifname {v} iifname . arp saddr ether . arp saddr ip != @own drop
  }}
}}
""" + "\n".join(fills) + "\n"

    async def start(self, recreate: set[int] | frozenset[int] = frozenset()) -> None:
        """ip_forward=1, install the nft table (keeping a previous server's slot rules), make
        the slots in ``recreate`` again (sandboxes whose netns a reboot took), start the pool."""
        if self._started:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        fwd = Path("/proc/sys/net/ipv4/ip_forward")
        self._old_ip_forward = fwd.read_text().strip()
        if self._old_ip_forward != "1":
            fwd.write_text("1")
        # every slot that exists now (running and paused sandboxes) keeps its source
        own = [self.own_element(self.slot(i), await self._sandbox_mac(self.slot(i)))
               for i in sorted(self.existing_indexes() - set(recreate))]
        if self.table_exists():
            # A previous server left it on purpose: its sandboxes are still running and their
            # per-slot chains keep enforcing. Replace only the base chains (and the arp table),
            # in one transaction; ``add`` first, so chains an older server lacked don't fail it.
            base = "".join(f"add chain inet {self.table} {c}\ndelete chain inet {self.table} {c}\n"
                           for c in BASE_CHAINS)
            base += f"add table arp {self.table}\ndelete table arp {self.table}\n"
            self._nft_cmd(base + self.ruleset(own))
        else:
            self._nft_cmd(f"add table arp {self.table}\ndelete table arp {self.table}\n" + self.ruleset(own))
        self._closing = False
        self._started = True
        for index in sorted(recreate):   # before the pool's refill could hand them out
            s = await self.make_slot(index)
            # a paused sandbox's: closed until its resume applies its own policy, so its
            # restored processes never run on an open network meanwhile
            await self.set_policy(s.sandbox_ip, EgressPolicy(deny=(ALL_IPV4,)))
            self._reserved.discard(index)
        self._refill_task = asyncio.create_task(self._refill_loop(), name="sandlot-netns-pool")

    async def close(self) -> None:
        """Stop the pool and delete pooled netns; when no sandbox is left, also remove the
        nft table and restore ip_forward.

        Slots in use by sandboxes are left alone (they are released by ``kill``)."""
        if not self._started:
            return
        self._closing = True
        self._refill_event.set()
        if self._refill_task:
            self._refill_task.cancel()
            try:
                await self._refill_task
            except (asyncio.CancelledError, Exception):
                pass
        for flt in self._dns_filters.values():
            flt.close()
        self._dns_filters.clear()
        self._policies.clear()
        self._default.clear()
        while not self._pool.empty():
            s = self._pool.get_nowait()
            release_netns(s.netns)
            self._reserved.discard(s.index)
        in_use = self.existing_indexes()
        if in_use:
            # Sandboxes outlive the server (a restart re-adopts them); without the table they
            # would reach the host's services and each other until then. Keep it and forwarding.
            log.info("keeping nft table %s for %d running sandboxes", self.table, len(in_use))
        else:
            for family in ("inet", "arp"):
                try:
                    self._nft_cmd(f"delete table {family} {self.table}")
                except NetworkError:
                    pass
            if self._old_ip_forward is not None and self._old_ip_forward != "1":
                Path("/proc/sys/net/ipv4/ip_forward").write_text(self._old_ip_forward)
        self._started = False

    def set_allow_private(self, cidrs: tuple[str, ...] | list[str]) -> None:
        """Replace the operator's allow-list of private CIDRs (in force at once if started)."""
        self.allow_private = tuple(str(ipaddress.IPv4Network(c, strict=False)) for c in cidrs)
        if self._started:
            t = f"inet {self.table}"
            cmd = f"flush set {t} lan_allow\n"
            if self.allow_private:
                cmd += f"add element {t} lan_allow {{ {', '.join(self.allow_private)} }}\n"
            self._nft_cmd(cmd)

    # --- egress policies --------------------------------------------------------------

    def index_of(self, sandbox_ip: str) -> int:
        offset = int(ipaddress.IPv4Address(sandbox_ip)) - int(self.subnet.network_address)
        if not 0 <= offset < self.subnet.num_addresses or offset % 4 != 2:
            raise NetworkError(f"{sandbox_ip} is not a sandbox address of {self.subnet}")
        return offset // 4

    async def set_policy(self, sandbox_ip: str, policy: EgressPolicy) -> None:
        """Replace the egress policy of the sandbox at ``sandbox_ip`` (atomically in nft).

        Applies to packets of connections already open too (the chain is consulted per
        packet), so tightening a policy cuts existing flows."""
        idx = self.index_of(sandbox_ip)
        default = policy == EgressPolicy()   # (the resolvers to forward to don't count)
        if default and idx in self._default and idx not in self._dns_filters:
            return
        self._default.discard(idx)
        s = self.slot(idx)
        old = self._dns_filters.pop(idx, None)
        if old is not None:
            old.close()
        cmd = policy_commands(self.table, idx, s.veth, policy)
        if not policy.domains and idx in self._policies and self._policies[idx].domains:
            cmd += f'delete element inet {self.table} dns_ifs {{ "{s.veth}" }}\n'
        self._nft_cmd(cmd)
        if default:
            self._default.add(idx)
        if policy.is_open:
            self._policies.pop(idx, None)
        else:
            self._policies[idx] = policy
        if policy.domains:
            flt = DnsFilter(s.host_ip, s.sandbox_ip, policy, lambda ips, ttl: self._allow_resolved(idx, ips, ttl))
            try:
                await flt.start()
            except OSError as exc:
                raise NetworkError(f"cannot start the DNS filter on {s.host_ip}:{DNS_PORT}: {exc}") from exc
            self._dns_filters[idx] = flt

    async def clear_policy(self, sandbox_ip: str) -> None:
        """The sandbox is going away: no egress at all (and no DNS filter) until its slot is
        made again (``make_slot`` opens it). Not "open": its processes may still run for a
        moment, and a no-internet sandbox must not get the internet while it dies."""
        await self.set_policy(sandbox_ip, EgressPolicy(deny=(ALL_IPV4,)))

    def _reset_slot(self, s: NetSlot, own: str | None = None) -> None:
        """Open egress and no DNS redirect for a slot, without knowing its previous policy
        (chains and set elements may come from a server that ran before this one); ``own``
        is added to the anti-spoofing sets in the same transaction."""
        old = self._dns_filters.pop(s.index, None)
        if old is not None:
            old.close()
        self._policies.pop(s.index, None)
        extra = ""
        if own is not None:
            extra = (f"add element inet {self.table} own {{ {own} }}\n"
                     f"add element arp {self.table} own {{ {own} }}\n")
        self._nft_cmd(policy_commands(self.table, s.index, s.veth, EgressPolicy())
                      + f'add element inet {self.table} dns_ifs {{ "{s.veth}" }}\n'
                      + f'delete element inet {self.table} dns_ifs {{ "{s.veth}" }}\n' + extra)
        self._default.add(s.index)

    async def _sandbox_mac(self, s: NetSlot) -> str:
        """The MAC of ``eth0`` in a slot's netns (a slot made by an older server has a
        random one); the derived one when it can't be read."""
        proc = await asyncio.create_subprocess_exec(
            IP, "-n", s.netns, "-o", "link", "show", "dev", "eth0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        m = re.search(r"link/ether ([0-9a-f:]{17})", out.decode(errors="replace"))
        return m.group(1) if m else sandbox_mac(s.sandbox_ip)

    def _allow_resolved(self, idx: int, ips: list[str], ttl: int) -> None:
        if idx not in self._policies:
            return
        elements = ", ".join(f"{ip} timeout {ttl}s" for ip in ips)
        self._nft_cmd(f"add element inet {self.table} {chain_name(idx)}n {{ {elements} }}\n")

    def table_exists(self) -> bool:
        try:
            self._nft_cmd(f"list table inet {self.table}")
            return True
        except NetworkError:
            return False


def sandbox_mac(sandbox_ip: str) -> str:
    """A locally administered unicast MAC carrying the IP, so each slot's is known and unique."""
    return "02:53:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(sandbox_ip).packed)


def release_netns(name: str) -> None:
    """Delete a named netns and its slot's veth pair, without a subprocess.

    The veth is deleted first, synchronously: left to the namespace, it would go only when
    the kernel's asynchronous netns cleanup runs (seconds later under load) or never while a
    process still holds the netns, so a host link outlived ``kill`` and ``sandlot reset``."""
    m = re.fullmatch(r"(.+)-(\d+)", name)   # ``Network.slot``'s names: <prefix>-<n> / <prefix>v<n>
    if m:
        try:
            delete_link(f"{m.group(1)}v{m.group(2)}")
        except OSError as e:   # the netns still goes; the kernel drops the pair with it
            log.warning("could not delete the veth of %s: %s", name, e)
    p = NETNS_DIR / name
    b = os.fsencode(str(p))
    if _libc.umount2(b, 2) != 0:  # MNT_DETACH
        err = ctypes.get_errno()
        if err not in (22, 2):    # EINVAL: not a mount, ENOENT
            raise OSError(err, f"umount {p}: {os.strerror(err)}")
    try:
        p.unlink()
    except FileNotFoundError:
        pass


_RTM_DELLINK, _NLMSG_ERROR, _IFLA_IFNAME = 17, 2, 3
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4


def delete_link(name: str) -> None:
    """Delete a host network link (both ends of a veth) by name over rtnetlink: done when
    this returns. A link that isn't there is fine."""
    ifname = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(ifname), _IFLA_IFNAME) + ifname
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attr   # ifinfomsg, by name
    msg = struct.pack("=IHHII", 16 + len(body), _RTM_DELLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sk:
        sk.sendto(msg, (0, 0))
        reply = sk.recv(4096)
    if struct.unpack_from("=H", reply, 4)[0] == _NLMSG_ERROR:
        err = -struct.unpack_from("=i", reply, 16)[0]
        if err not in (0, errno.ENODEV):
            raise OSError(err, f"delete link {name}: {os.strerror(err)}")


def host_nameservers() -> list[str]:
    """Non-loopback nameservers from the host's resolv.conf."""
    out = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    if not ipaddress.ip_address(parts[1]).is_loopback:
                        out.append(parts[1])
                except ValueError:
                    pass
    except OSError:
        pass
    return out
