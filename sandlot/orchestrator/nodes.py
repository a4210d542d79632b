"""This server as a node of the registry: registers at start, heartbeats, and gates placement.

Single-box today: the server is its one node, so "placement" is one question — may this node
take a new sandbox? An operator's drain (``POST /nodes/{id}``, stored in the database) says no;
creates then fail with :class:`NoNodeAvailable` (503) and running sandboxes are untouched.
The status is kept in memory (a create pays no store query): set at registration, by a drain
through this server's own route at once, and re-read from the database with every heartbeat, so a
drain written by another process takes effect within ``node_heartbeat_s``. See docs/scale-out.md
for what a multi-node registry adds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from datetime import datetime, timezone
from importlib import metadata

import structlog

from sandlot.orchestrator.errors import NoNodeAvailable
from sandlot.orchestrator.periodic import Periodic
from sandlot.settings import Settings
from sandlot.store import nodes as node_store
from sandlot.store.database import Database

log = structlog.get_logger("sandlot.nodes")

STALE_HEARTBEATS = 3
"""A node that missed this many heartbeats in a row is reported ``unavailable``."""


def default_node_id(settings: Settings) -> str:
    """``SANDLOT_NODE_ID``, else the host name (plus the instance when it is not the default)."""
    if settings.node_id:
        return settings.node_id
    host = socket.gethostname() or "sandlot"
    return host if settings.instance == "sandlot" else f"{host}-{settings.instance}"


def host_capacity(settings: Settings) -> node_store.Capacity:
    """CPUs, memory and sandbox address slots (a /30 per sandbox) of this host."""
    memory_mb = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    slots = ipaddress.ip_network(settings.sandbox_subnet, strict=False).num_addresses // 4
    return node_store.Capacity(cpu_count=os.cpu_count() or 0, memory_mb=memory_mb, sandbox_slots=slots)


def version() -> str:
    try:
        return metadata.version("sandlot")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def stale_after_s(settings: Settings) -> float:
    return settings.node_heartbeat_s * STALE_HEARTBEATS


class NodeRegistry(Periodic):
    """Registers this server as a node and keeps its heartbeat fresh (every ``node_heartbeat_s``)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__()
        self.settings = settings
        self.db = db
        self.node_id = default_node_id(settings)
        self.every_s = settings.node_heartbeat_s
        self.status = node_store.READY
        """This node's status as last read or set (what :meth:`admit` answers from)."""

    def address(self) -> str:
        return self.settings.effective_node_address

    def register(self) -> None:
        with self.db.session() as session:
            row = node_store.register(session, self.node_id, self.address(), host_capacity(self.settings),
                                      version(), datetime.now(timezone.utc))
            self.status = row.status
            log.info("node registered", node=self.node_id, status=row.status)

    async def start_registered(self) -> None:
        await asyncio.to_thread(self.register)
        self.start()

    async def tick(self) -> None:
        await asyncio.to_thread(self._beat)

    def _beat(self) -> None:
        with self.db.session() as session:
            alive = node_store.heartbeat(session, self.node_id, datetime.now(timezone.utc))
            row = node_store.get(session, self.node_id) if alive else None
            if row is not None:
                self.status = row.status   # a drain another process wrote
        if not alive:   # an operator deleted the row: come back rather than vanish
            self.register()

    def noted(self, node_id: str, status: str) -> None:
        """An operator set ``node_id``'s status through this server: apply it now if it is us."""
        if node_id == self.node_id:
            self.status = status

    def admit(self) -> None:
        """Raise :class:`NoNodeAvailable` unless this node may take a new sandbox."""
        if self.status == node_store.DRAINING:
            raise NoNodeAvailable(f"No node can take new sandboxes: node \"{self.node_id}\" is draining "
                                  f"(an operator set it with POST /nodes/{self.node_id}); running sandboxes "
                                  "keep running. Retry once the node is enabled again.")
