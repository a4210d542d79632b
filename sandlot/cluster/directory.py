"""Where things are in a cluster: the nodes and which node holds a sandbox, from PostgreSQL.

An API instance asks this for every request it routes, so answers are cached briefly: the node
list for ``NODE_TTL_S``, a sandbox's holder for ``SANDBOX_TTL_S``. A sandbox only changes node
through a pause and a resume, and the router forgets its entry whenever it forwards one, so a
stale entry can only exist in another API instance, for at most the TTL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from sandlot.orchestrator.nodes import stale_after_s
from sandlot.proxy.signed_files import signer_of
from sandlot.settings import Settings
from sandlot.store import nodes as node_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox

NODE_TTL_S = 1.0
SANDBOX_TTL_S = 2.0
SIGNERS_TTL_S = 1.0


@dataclass(frozen=True)
class NodeView:
    id: str
    address: str
    status: str
    """``ready``, ``draining`` or ``unavailable`` (heartbeat too old)."""
    cpu_count: int
    memory_mb: int
    sandbox_slots: int

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass(frozen=True)
class Holding:
    node_id: str | None
    state: str


class Directory:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._nodes: tuple[float, dict[str, NodeView]] = (0.0, {})
        self._held: dict[str, tuple[float, Holding]] = {}
        self._signers: tuple[float, list[tuple[str, str]]] = (0.0, [])

    async def nodes(self) -> dict[str, NodeView]:
        at, nodes = self._nodes
        if time.monotonic() - at < NODE_TTL_S:
            return nodes
        nodes = await asyncio.to_thread(self._read_nodes)
        self._nodes = (time.monotonic(), nodes)
        return nodes

    def _read_nodes(self) -> dict[str, NodeView]:
        now = datetime.now(timezone.utc)
        stale = stale_after_s(self.settings)
        with self.db.session() as session:
            return {row.id: NodeView(row.id, row.address, node_store.effective_status(row, now, stale),
                                     row.cpu_count, row.memory_mb, row.sandbox_slots)
                    for row in node_store.listed(session)}

    async def holding(self, sandbox_id: str) -> Holding | None:
        """The node and state of a live sandbox, or ``None`` when there is no such sandbox."""
        cached = self._held.get(sandbox_id)
        if cached is not None and time.monotonic() - cached[0] < SANDBOX_TTL_S:
            return cached[1]
        holding = await asyncio.to_thread(self._read_holding, sandbox_id)
        if holding is not None and holding.state == "running":   # the only state that stays put
            if len(self._held) > 100_000:
                self._held.clear()
            self._held[sandbox_id] = (time.monotonic(), holding)
        return holding

    def _read_holding(self, sandbox_id: str) -> Holding | None:
        with self.db.session() as session:
            found = session.execute(select(Sandbox.node_id, Sandbox.state).where(Sandbox.id == sandbox_id)).first()
        return Holding(found[0], found[1]) if found is not None else None

    def forget(self, sandbox_id: str) -> None:
        self._held.pop(sandbox_id, None)

    async def signer(self, method: str, query: bytes) -> str | None:
        """The running sandbox whose token signed a ``/files`` URL (the URL names no sandbox)."""
        at, tokens = self._signers
        if time.monotonic() - at >= SIGNERS_TTL_S:
            tokens = await asyncio.to_thread(self._read_signers)
            self._signers = (time.monotonic(), tokens)
        return signer_of(method, query, tokens)

    def _read_signers(self) -> list[tuple[str, str]]:
        with self.db.session() as session:
            return [(sid, token) for sid, token in session.execute(
                select(Sandbox.id, Sandbox.envd_access_token).where(Sandbox.state == "running"))]
