"""E2B's lifecycle events: heard from the state machine, kept in the store, sent to webhooks.

:class:`Lifecycle` calls :meth:`LifecycleEvents.on_transition` after each state change. That
call only builds the event from the row and queues it (no I/O: a recovery's session may
still hold the store's write lock); a background flush writes queued events in a worker
thread, prunes what the operator's retention no longer keeps, and hands the team's
subscribed webhooks their signed deliveries (:mod:`sandlot.orchestrator.webhooks`). Reads
flush first, so an event is listed as soon as the operation that caused it has answered.

Transitions → E2B types: creating→running ``created``; resuming→running ``resumed``;
pausing→paused ``paused``; killing→gone ``killed`` (``kill_reason`` ``timeout`` when its end
time had passed, ``unknown`` when it died on its own, else ``request``); lost across a
restart → ``killed`` (``orphaned``). A start that failed (creating→gone) announced nothing.
``updated`` (timeout, egress rules) and ``checkpointed`` (a snapshot) are not transitions:
``SandboxManager`` reports them after the change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from sqlalchemy.orm import Session

from sandlot.orchestrator.lifecycle import CREATING, GONE, KILLING, PAUSED, PAUSING, RESUMING, RUNNING
from sandlot.orchestrator.webhooks import Delivery, WebhookSender
from sandlot.secret_keys import data_dir_key
from sandlot.settings import Settings
from sandlot.store import events as event_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox

log = structlog.get_logger("sandlot.events")

PREFIX = "sandbox.lifecycle."
CREATED, RESUMED, PAUSED_EVENT, UPDATED, KILLED, CHECKPOINTED = (
    PREFIX + "created", PREFIX + "resumed", PREFIX + "paused", PREFIX + "updated", PREFIX + "killed",
    PREFIX + "checkpointed")
TYPES = (CREATED, RESUMED, PAUSED_EVENT, UPDATED, KILLED, CHECKPOINTED)
"""E2B's event types."""
LABELS = {CREATED: "create", RESUMED: "resume", PAUSED_EVENT: "pause", UPDATED: "update", KILLED: "kill",
          CHECKPOINTED: "checkpoint"}
MAX_UNSTORED = 10_000
"""Events held in memory while the store fails (each is a few hundred bytes)."""
STARTS = (CREATED, RESUMED)
"""Events that begin an execution (what ``execution.started_at`` refers to)."""


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Heard:
    """A transition as heard, with the row's values read at that moment."""

    type: str
    at: datetime
    team_id: str
    sandbox_id: str
    template_id: str
    build_id: str
    metadata: dict[str, str]
    vcpu_count: int
    memory_mb: int
    started_at: datetime
    kill_reason: str | None
    extra: dict[str, Any] | None = None
    """More ``eventData`` (``updated``: ``set_timeout``, ``network_egress``)."""


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
        return True
    except ValueError:
        return False


def event_type(old: str, new: str) -> str | None:
    if new == RUNNING:
        return CREATED if old == CREATING else RESUMED if old == RESUMING else None
    if new == PAUSED and old == PAUSING:
        return PAUSED_EVENT
    if new == GONE and old != CREATING:
        return KILLED
    return None


class LifecycleEvents:
    """Subscriber of :attr:`Lifecycle.transitions` (wired by ``SandboxManager``)."""

    def __init__(self, settings: Settings, db: Database, sender: WebhookSender | None = None) -> None:
        self.settings = settings
        self.db = db
        self.sender = sender or WebhookSender(settings)
        self._heard: list[Heard] = []
        self._died: dict[str, str] = {}
        self._executions: dict[str, tuple[str, datetime]] = {}
        """Running sandbox → (execution id, when it began); the store answers after a restart."""
        self._flush_lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._key: bytes | None = None

    @property
    def secret_key(self) -> bytes:
        """Seals webhooks' signature secrets in the store (``store/events.py``)."""
        if self._key is None:
            self._key = data_dir_key(self.settings.data_dir, event_store.KEY_FILE)
        return self._key

    def current_execution(self, sandbox_id: str) -> str | None:
        """The running sandbox's execution id once its start event was recorded (else ``None``)."""
        known = self._executions.get(sandbox_id)
        return known[0] if known is not None else None

    # --- what the state machine and the manager call (never wait) --------------------------------

    def on_transition(self, row: Sandbox, old: str, new: str) -> None:
        kind = event_type(old, new)
        if kind is None:
            return
        now = datetime.now(timezone.utc)
        reason = None
        if kind == KILLED:
            died = self._died.pop(row.id, None)
            if old != KILLING:
                reason = "orphaned"
            elif died is not None:
                reason = "unknown"
            elif row.paused_at is None and row.end_at <= now:
                reason = "timeout"
            else:
                reason = "request"
        self._hear(row, kind, reason=reason)

    def updated(self, row: Sandbox, *, set_timeout: datetime | None = None,
                network: dict[str, Any] | None = None) -> None:
        """A running sandbox's timeout or egress rules were changed (not a state transition:
        ``SandboxManager`` calls it after the change is committed)."""
        extra: dict[str, Any] = {}
        if set_timeout is not None:
            extra["set_timeout"] = rfc3339(set_timeout)
        if network is not None:
            allow = [str(v) for v in network.get("allowOut") or []]
            extra["network_egress"] = {
                "allowed_cidrs": [v for v in allow if _is_cidr(v)],
                "denied_cidrs": [str(v) for v in network.get("denyOut") or []],
                "allowed_domains": [v for v in allow if not _is_cidr(v)],
            }
        self._hear(row, UPDATED, extra=extra)

    def checkpointed(self, row: Sandbox) -> None:
        """A snapshot of the running sandbox was taken."""
        self._hear(row, CHECKPOINTED)

    def _hear(self, row: Sandbox, kind: str, *, reason: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
        if len(self._heard) >= MAX_UNSTORED:   # the store has been failing for long: keep the newest
            del self._heard[0]
            log.error("lifecycle event dropped: the store is not accepting events")
        self._heard.append(Heard(kind, datetime.now(timezone.utc), row.team_id, row.id, row.template_id,
                                 row.build_id, dict(row.metadata_ or {}), row.cpu_count, row.memory_mb,
                                 row.started_at, reason, extra))
        self._kick()

    def died(self, sandbox_id: str, reason: str) -> None:
        """A ``SandboxManager.death_hooks`` entry: the kill that follows was not requested."""
        self._died[sandbox_id] = reason

    def _kick(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:   # no loop (a synchronous caller): the next flush writes it
            return
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:   # the store is down: events stay queued for the next try
                log.exception("could not store lifecycle events")
                await asyncio.sleep(1)

    # --- writing ----------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Store what was heard (in order) and queue its webhook deliveries."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            batch, self._heard = self._heard, []
            if not batch:
                return
            try:
                deliveries = await asyncio.to_thread(self._store, batch)
            except Exception:   # (a cancelled flush's thread still commits: not re-queued)
                self._heard[:0] = batch   # nothing lost: retried at the next flush
                raise
        for delivery in deliveries:
            self.sender.submit(delivery)

    def _store(self, batch: list[Heard]) -> list[Delivery]:
        deliveries: list[Delivery] = []
        key = self.secret_key
        retention = timedelta(days=self.settings.events_retention_days)
        with self.db.session() as session, session.begin():
            for heard in batch:
                body = self._body(session, heard)
                event_store.add(session, heard.team_id, heard.sandbox_id, body, heard.at)
                raw = json.dumps(body, separators=(",", ":")).encode()
                for hook in event_store.subscribed(session, heard.team_id, heard.type):
                    try:
                        secret = event_store.open_secret(key, hook.id, hook.secret)
                    except Exception:   # a row sealed with another key (a copied database): unsigned is worse
                        log.error("webhook secret does not open with this data dir's key", webhook_id=hook.id)
                        continue
                    deliveries.append(Delivery(hook.id, body["id"], heard.type, heard.sandbox_id, hook.url,
                                               secret, raw))
            session.flush()
            for team_id in {heard.team_id for heard in batch}:
                event_store.prune(session, team_id, keep=max(0, self.settings.events_max_per_team),
                                  older_than=datetime.now(timezone.utc) - retention)
        return deliveries

    def _execution(self, session: Session, heard: Heard) -> tuple[str, datetime]:
        """The execution (one run from a create or resume to a pause or kill) the event belongs to."""
        if heard.type in STARTS:
            began = heard.started_at if heard.type == CREATED else heard.at
            execution = (str(uuid.uuid4()), began)
            self._executions[heard.sandbox_id] = execution
            return execution
        ends = heard.type in (PAUSED_EVENT, KILLED)
        known = self._executions.pop(heard.sandbox_id, None) if ends else self._executions.get(heard.sandbox_id)
        if known is not None:
            return known
        start = event_store.last_of(session, heard.team_id, heard.sandbox_id, STARTS)
        if start is not None:
            return str(start["sandboxExecutionId"]), datetime.fromisoformat(
                str(start["timestamp"]).replace("Z", "+00:00"))
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandlot:{heard.sandbox_id}:{heard.started_at}")), heard.started_at

    def _body(self, session: Session, heard: Heard) -> dict[str, Any]:
        """The event as E2B's API and webhooks carry it (``eventData`` keys are snake_case)."""
        execution_id, began = self._execution(session, heard)
        data: dict[str, Any] = {}
        if heard.metadata:
            data["sandbox_metadata"] = heard.metadata
        if heard.type in (PAUSED_EVENT, KILLED):
            data["execution"] = {
                "started_at": rfc3339(began),
                "vcpu_count": heard.vcpu_count,
                "memory_mb": heard.memory_mb,
                "execution_time": max(0, int((heard.at - began).total_seconds() * 1000)),
            }
        if heard.kill_reason is not None:
            data["kill_reason"] = heard.kill_reason
        data.update(heard.extra or {})
        return {
            "id": str(uuid.uuid4()),
            "version": "v2",
            "type": heard.type,
            "timestamp": rfc3339(heard.at),
            "eventCategory": "lifecycle",
            "eventLabel": LABELS[heard.type],
            "eventData": data or None,
            "sandboxId": heard.sandbox_id,
            "sandboxExecutionId": execution_id,
            "sandboxTemplateId": heard.template_id,
            "sandboxBuildId": heard.build_id,
            "sandboxTeamId": heard.team_id,
        }

    # --- reading ----------------------------------------------------------------------------------

    async def page(self, team_id: str, *, sandbox_id: str | None, offset: int, limit: int, order_asc: bool,
                   types: list[str]) -> list[dict[str, Any]]:
        await self.flush()

        def read() -> list[dict[str, Any]]:
            with self.db.session() as session:
                return event_store.page(session, team_id, sandbox_id=sandbox_id, offset=offset, limit=limit,
                                        order_asc=order_asc, types=types)

        return await asyncio.to_thread(read)

    # --- shutdown -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Store what is still queued (events survive a restart), then stop the sender."""
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        try:
            await self.flush()
        except Exception:
            log.exception("could not store lifecycle events at shutdown")
        await self.sender.close()
