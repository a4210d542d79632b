"""Marks the sandboxes of a node that stopped heartbeating as gone, as E2B does when a host dies.

Every API instance runs one; each sweep runs in a transaction that first takes
``pg_try_advisory_xact_lock(SWEEP_LOCK)``, so one instance does the work and the others skip
the round — PostgreSQL is the only coordinator. Running, starting and half-way rows of a silent
node go through ``Lifecycle.lost`` (the one writer of sandbox state: lifecycle events and
webhooks included). Paused sandboxes stay: their images are in the blob store and any node
can resume them. A node that comes back finds those rows gone and removes the containers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import cast

import structlog
from sqlalchemy import select, text

from sandlot.orchestrator.events import EventLog
from sandlot.orchestrator.lifecycle import Lifecycle
from sandlot.orchestrator.lifecycle_events import LifecycleEvents
from sandlot.orchestrator.metrics import MetricsSampler
from sandlot.orchestrator.nodes import stale_after_s
from sandlot.orchestrator.periodic import Periodic
from sandlot.runtime.base import Runtime
from sandlot.settings import Settings
from sandlot.store import nodes as node_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox

log = structlog.get_logger("sandlot.cluster")

SWEEP_LOCK = 0x5A4D_0002
LOST_STATES = ("creating", "running", "pausing", "resuming", "killing")


class Sweeper(Periodic):
    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__()
        self.settings = settings
        self.db = db
        self.every_s = settings.node_heartbeat_s
        self.events = LifecycleEvents(settings, db)
        # the API tier has no runtime: the lifecycle here only ever records losses
        self.lifecycle = Lifecycle(settings, db, MetricsSampler(cast(Runtime, None)),
                                   EventLog(settings.data_dir / "logs" / settings.instance))
        self.lifecycle.transitions.append(self.events.on_transition)

    async def tick(self) -> None:
        if await asyncio.to_thread(self.sweep):
            await self.events.flush()   # the killed events (and their webhooks) of the lost sandboxes

    def sweep(self) -> list[str]:
        """Ids of the sandboxes reported gone in this round (none when another instance swept)."""
        now = datetime.now(timezone.utc)
        with self.db.session() as session, session.begin():
            if self.db.engine.dialect.name == "postgresql" and not session.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK}).scalar():
                return []
            silent = [row.id for row in node_store.listed(session)
                      if node_store.effective_status(row, now, stale_after_s(self.settings)) == node_store.UNAVAILABLE]
            if not silent:
                return []
            rows = list(session.scalars(select(Sandbox).where(Sandbox.node_id.in_(silent),
                                                              Sandbox.state.in_(LOST_STATES))
                                        .with_for_update(skip_locked=True)))
            for row in rows:
                log.warning("node is silent: sandbox reported gone", sandbox_id=row.id, node=row.node_id)
                self.lifecycle.lost(session, row)
            return [row.id for row in rows]

    async def close(self) -> None:
        await super().close()
        await self.events.close()
