"""The sandbox state machine: the one owner of every state change.

::

    creating ──▶ running ──▶ pausing ──▶ paused ──▶ resuming ──▶ running
       │            │   ▲       │          │           │
       │            │   └───────┘ (failed) │           └──▶ paused (failed)
       ▼            ▼                      ▼
     gone        killing ──▶ gone       killing

Snapshots and forks are transient operations on a running sandbox (under its lock, no
state of their own). Every transition below writes the store row and the route table
together; callers (create, pause, kill, recovery) do the runtime work between them,
holding the sandbox's lock. An illegal transition is a bug and raises
:class:`IllegalTransition`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import structlog
from sqlalchemy.orm import Session

from sandlot.orchestrator.errors import Conflict, GuestUnresponsiveAtPause, OperationFailed, SandboxNotFound
from sandlot.orchestrator.events import EventLog
from sandlot.orchestrator.metrics import MetricsSampler
from sandlot.proxy.routes import PauseHook, Route
from sandlot.proxy.traffic import private_traffic_token
from sandlot.quotas import check_sandbox_quota, reserve_sandbox
from sandlot.runtime.base import SandboxHandle
from sandlot.settings import Settings
from sandlot.store import templates as template_store
from sandlot.store.database import Database
from sandlot.store.models import Sandbox

log = structlog.get_logger("sandlot.orchestrator")

CREATING, RUNNING, PAUSING, PAUSED, RESUMING, KILLING = (
    "creating", "running", "pausing", "paused", "resuming", "killing")
GONE = "gone"
"""Not a stored state: the row is deleted."""

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATING: frozenset({RUNNING, GONE}),
    RUNNING: frozenset({PAUSING, KILLING, GONE}),
    PAUSING: frozenset({PAUSED, RUNNING, KILLING, GONE}),
    PAUSED: frozenset({RESUMING, KILLING, GONE}),
    RESUMING: frozenset({RUNNING, PAUSED, KILLING, GONE}),
    KILLING: frozenset({GONE}),
}
"""Legal moves. ``GONE`` from any state: a container lost across a restart or dead on its own."""

Transition = Callable[[Sandbox, str, str], None]
"""A listener of :attr:`Lifecycle.transitions`: called with (row, old state, new state) after the
change is committed (``GONE`` for a removed row, and as the old state of a row just admitted as
``creating``). It must not write the store synchronously: a recovery's session may still hold
the write lock (``lost``). Listeners are called on the event loop: they must be cheap."""

Operation = Callable[[str, float, bool], None]
"""A listener of :attr:`Lifecycle.operations`: (kind, seconds, succeeded) of a timed operation
that is not a state change (``snapshot``)."""


class IllegalTransition(RuntimeError):
    """A state change the machine does not allow: a bug in the caller, never the tenant's doing."""


def check_move(current: str, new: str) -> None:
    if new not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"sandbox state {current} → {new} is not allowed")


def route_for(row: Sandbox, ip: str, state: str = RUNNING) -> Route:
    """The front door's view of a sandbox row (network ingress settings included)."""
    network = row.network or {}
    return Route(ip, state, row.envd_access_token, private_traffic_token(row.id, row.envd_access_token, network),
                 network.get("maskRequestHost"), tuple(network.get("httpsPorts") or ()))


class Lifecycle:
    """Sandbox rows' ``state``, the route table and per-sandbox locks, kept in step."""

    def __init__(self, settings: Settings, db: Database, metrics: MetricsSampler, events: EventLog) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.events = events
        self.node_id: str | None = None
        """This node's id, stamped on every row it inserts (the router sends the sandbox's traffic there)."""
        self._routes: dict[str, Route] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pause_hooks: list[PauseHook] = []
        self.transitions: list[Transition] = []
        """Who hears of each state change (lifecycle events and webhooks: ``lifecycle_events.py``;
        the Prometheus metrics: ``telemetry.py``)."""
        self.operations: list[Operation] = []
        """Who hears how long snapshots took (``telemetry.py``)."""

    # --- reads ----------------------------------------------------------------------------

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        """Held by every operation that changes the sandbox (create, pause, resume, snapshot, kill)."""
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def route(self, sandbox_id: str) -> Route | None:
        return self._routes.get(sandbox_id)

    def routed(self) -> list[tuple[str, Route]]:
        return list(self._routes.items())

    def signing_tokens(self) -> list[tuple[str, str]]:
        return [(sid, r.access_token) for sid, r in self._routes.items() if r.state == RUNNING]

    def on_pause(self, hook: PauseHook) -> None:
        self._pause_hooks.append(hook)

    def get(self, sandbox_id: str) -> Sandbox:
        """The row; :class:`SandboxNotFound` when there is none."""
        with self.db.session() as session:
            row = session.get(Sandbox, sandbox_id)
        if row is None:
            raise SandboxNotFound(sandbox_id)
        return row

    # --- creating -------------------------------------------------------------------------

    def admit(self, row: Sandbox, *, reserved_id: str | None = None,
              claim: Callable[[], SandboxHandle | None] | None = None) -> SandboxHandle | None:
        """Insert ``row`` as ``creating`` once the team's quota allows it (``QuotaExceeded``).

        ``claim`` (the warm pool's) runs in the same step, with no await between the quota
        check and the insert; a claimed sandbox keeps the id it was booted with."""
        row.state = CREATING
        row.node_id = self.node_id
        with self.db.session() as session, session.begin():
            reserve_sandbox(session, self.settings, row.team_id, reserved_id)
            handle = claim() if claim is not None else None
            if handle is not None:
                row.id = handle.sandbox_id
            session.add(row)
        self._tell(row, GONE, CREATING)
        return handle

    def check_quota(self, team_id: str) -> None:
        """``QuotaExceeded`` when the team runs its limit of sandboxes now: a read without the team's
        lock, so a create can refuse before it uses anything up; the decision that counts is taken
        again in the write that inserts the row."""
        with self.db.session() as session:
            check_sandbox_quota(session, self.settings, team_id)

    def admit_running(self, row: Sandbox, handle: SandboxHandle, timeout_s: int, *,
                      spawned_from: str | None = None) -> Sandbox:
        """Insert ``row`` as ``running`` at ``handle``'s address in one write (creating → running at
        once), for a sandbox that ran before it had a row: a warm-pool claim whose envd has its
        identity already. The quota check (``QuotaExceeded``: nothing written), the insert and the
        template's spawn count commit together; traffic is routed to it from here on."""
        started = datetime.now(timezone.utc)
        check_move(CREATING, RUNNING)
        row.state = RUNNING
        row.ip = handle.ip
        row.node_id = self.node_id
        row.started_at = started
        row.end_at = started + timedelta(seconds=timeout_s)
        with self.db.session() as session, session.begin():
            reserve_sandbox(session, self.settings, row.team_id)
            session.add(row)
            if spawned_from is not None:
                template_store.mark_spawned(session, spawned_from)
        self._route(row, handle.ip)
        self._tell(row, GONE, CREATING)
        self._tell(row, CREATING, RUNNING)
        return row

    def activate(self, sandbox_id: str, handle: SandboxHandle, timeout_s: int, *,
                 spawned_from: str | None = None) -> Sandbox:
        """creating → running: its clock starts now and traffic is routed to it."""
        started = datetime.now(timezone.utc)
        with self.db.session() as session, session.begin():
            row = self._row(session, sandbox_id)
            self._move(row, RUNNING)
            row.ip = handle.ip
            row.started_at = started
            row.end_at = started + timedelta(seconds=timeout_s)
            if spawned_from is not None:
                template_store.mark_spawned(session, spawned_from)
        self._route(row, handle.ip)
        self._tell(row, CREATING, RUNNING)
        return row

    def abandon(self, sandbox_id: str, exc: BaseException, what: str) -> None:
        """creating → gone: a start that failed (the runtime already removed what it made).

        Raises :class:`OperationFailed` ("``what``: error") for ordinary errors; returns for
        cancellations, which the caller re-raises."""
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is not None:
                self._move(row, GONE)
                session.delete(row)
        if row is not None:
            self._tell(row, CREATING, GONE)
        self._locks.pop(sandbox_id, None)
        log.error(what.lower(), sandbox_id=sandbox_id, error=repr(exc))
        if isinstance(exc, Exception):
            raise OperationFailed(f"{what}: {exc}") from exc

    # --- pausing --------------------------------------------------------------------------

    def begin_pause(self, sandbox_id: str, *, envd_unresponsive: bool = False) -> Route | None:
        """running → pausing; the route is withdrawn (returned, to put back if the pause fails).
        ``envd_unresponsive``: the image about to be taken is of a hung guest agent (recorded now,
        so a pause settled after a crash keeps it)."""
        with self.db.session() as session, session.begin():
            row = self._row(session, sandbox_id)
            if row.state == PAUSED:
                raise Conflict(f"Error pausing sandbox - sandbox '{sandbox_id}' is already paused")
            if row.state != RUNNING:
                raise Conflict(f"Sandbox \"{sandbox_id}\" is {row.state}")
            self._move(row, PAUSING)
            row.envd_unresponsive_at_pause = envd_unresponsive
            row.pause_hot = False
        self._tell(row, RUNNING, PAUSING)
        return self._routes.pop(sandbox_id, None)

    def pause_failed(self, sandbox_id: str, route: Route | None, *, alive: bool) -> None:
        """pausing → running when the sandbox survived the failed pause (else it stays pausing,
        settled by the reaper or the next start)."""
        if not alive:
            return
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is not None:
                self._move(row, RUNNING)
                row.envd_unresponsive_at_pause = False
        if route is not None:
            self._routes[sandbox_id] = route
        if row is not None:
            self._tell(row, PAUSING, RUNNING)

    async def paused(self, sandbox_id: str, route: Route | None, *, hot: bool = False) -> None:
        """pausing → paused; peers of its old address forget their connections. ``hot``: its
        memory is still live in a frozen container (``pause_hot``), whose sockets are intact:
        peers keep their connections until it is cooled (:meth:`cooled`)."""
        now = datetime.now(timezone.utc)
        with self.db.session() as session, session.begin():
            row = self._row(session, sandbox_id)
            self._move(row, PAUSED)
            row.paused_at = now
            row.end_at = now
            row.pause_hot = hot
        self._tell(row, PAUSING, PAUSED)
        self.metrics.forget(sandbox_id)
        if route is not None and not hot:
            await self._forget_connections(route.ip)

    async def cooled(self, sandbox_id: str) -> Sandbox:
        """A hot pause became a CRIU checkpoint: still ``paused`` (no transition, no event), no
        longer hot; peers of its address forget their connections, as after any checkpoint."""
        with self.db.session() as session, session.begin():
            row = self._row(session, sandbox_id)
            row.pause_hot = False
        if row.ip:
            await self._forget_connections(row.ip)
        return row

    async def _forget_connections(self, ip: str) -> None:
        # CRIU's network lock swallowed the FINs of envd's sockets: peers must forget them
        for hook in self._pause_hooks:
            await hook(ip)

    # --- resuming -------------------------------------------------------------------------

    def begin_resume(self, sandbox_id: str, *, memory: bool = True) -> Sandbox | None:
        """paused → resuming (it takes a quota slot again); ``None`` when it is running already.
        A memory resume of an image of a hung guest agent is refused: it would come back hung."""
        with self.db.session() as session, session.begin():
            row = self._row(session, sandbox_id)
            if row.state == RUNNING:
                return None
            if row.state != PAUSED:
                raise Conflict(f"Sandbox \"{sandbox_id}\" is {row.state}")
            if memory and row.envd_unresponsive_at_pause:
                raise GuestUnresponsiveAtPause(
                    f"Sandbox \"{sandbox_id}\" was paused while its guest agent (envd) was not responding: "
                    "restoring its memory would bring the unresponsive agent back; resume it without "
                    "memory (memory: false), which cold-boots it from its disk")
            reserve_sandbox(session, self.settings, row.team_id)   # a resumed sandbox runs again
            self._move(row, RESUMING)
        self._tell(row, PAUSED, RESUMING)
        return row

    def resume_failed(self, sandbox_id: str) -> None:
        """resuming → paused: it stays paused, nothing lost."""
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is not None:
                self._move(row, PAUSED)
        if row is not None:
            self._tell(row, RESUMING, PAUSED)

    def resumed(self, sandbox_id: str, ip: str, timeout_s: int) -> Sandbox:
        """resuming → running, with a new end time (within the sandbox's maximum lifetime)."""
        now = datetime.now(timezone.utc)
        with self.db.session() as session, session.begin():
            row = self._row(session, sandbox_id)
            self._move(row, RUNNING)
            row.ip = ip
            row.paused_at = None
            row.envd_unresponsive_at_pause = False
            row.pause_hot = False
            row.end_at = min(now + timedelta(seconds=timeout_s),
                             row.started_at + timedelta(seconds=self.settings.max_lifetime_s))
        self._route(row, ip)
        self._tell(row, RESUMING, RUNNING)
        return row

    # --- killing --------------------------------------------------------------------------

    def begin_kill(self, sandbox_id: str) -> str | None:
        """any → killing: unrouted at once; returns the address to release."""
        self._routes.pop(sandbox_id, None)
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is None:
                return None
            if row.state != KILLING:
                self._move(row, KILLING)
            return row.ip

    def gone(self, sandbox_id: str) -> None:
        """killing → gone: the row, metrics and event log of a removed sandbox are dropped."""
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is not None:
                self._move(row, GONE)
                session.delete(row)
        if row is not None:
            self._tell(row, KILLING, GONE)
        self.metrics.forget(sandbox_id)
        self.events.drop(sandbox_id)

    def release_lock(self, sandbox_id: str) -> None:
        self._locks.pop(sandbox_id, None)

    # --- recovery after a restart (rows of the recovering session) --------------------------

    def readopt(self, row: Sandbox, ip: str) -> None:
        """A running sandbox that survived the restart gets its route back."""
        row.ip = ip
        self._route(row, ip)
        self.events.record(row.id, "sandbox re-adopted after a server restart")

    def settle_running(self, row: Sandbox, ip: str) -> None:
        """An interrupted pause or resume whose sandbox is running: pausing/resuming → running."""
        if row.state != RUNNING:
            self._move(row, RUNNING)
        row.ip = ip
        row.paused_at = None
        row.envd_unresponsive_at_pause = False
        row.pause_hot = False
        now = datetime.now(timezone.utc)
        if row.end_at <= now:
            row.end_at = now + timedelta(seconds=self.settings.default_timeout_s)
        self._route(row, ip)

    def settle_paused(self, row: Sandbox) -> None:
        """An interrupted pause, resume or cool-down whose image is complete: → paused (cold)."""
        if row.state != PAUSED:
            self._move(row, PAUSED)
            row.paused_at = row.paused_at or datetime.now(timezone.utc)
        row.pause_hot = False

    def lost(self, session: Session, row: Sandbox) -> None:
        """A sandbox whose container did not survive the restart: → gone."""
        old = row.state
        self._move(row, GONE)
        session.delete(row)
        self._tell(row, old, GONE)

    def vanished(self, sandbox_id: str) -> None:
        """A hot-paused sandbox whose frozen container died while the server ran: → gone, reported
        as a pause lost across a restart is (:meth:`lost`)."""
        with self.db.session() as session, session.begin():
            row = session.get(Sandbox, sandbox_id)
            if row is None:
                return
            self.lost(session, row)
        self.metrics.forget(sandbox_id)
        self.events.drop(sandbox_id)

    # --- timed operations (no state of their own) -----------------------------------------

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        """Tell :attr:`operations` how long the block took and whether it raised."""
        started = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - started
            for listener in self.operations:
                try:
                    listener(kind, elapsed, ok)
                except Exception:   # a listener's bug never fails the operation
                    log.exception("operation listener failed", kind=kind)

    # --- internals ------------------------------------------------------------------------

    def _tell(self, row: Sandbox, old: str, new: str) -> None:
        for listener in self.transitions:
            try:
                listener(row, old, new)
            except Exception:   # a listener's bug never fails a state change
                log.exception("transition listener failed", sandbox_id=row.id)

    @staticmethod
    def _row(session: Session, sandbox_id: str) -> Sandbox:
        row = session.get(Sandbox, sandbox_id)
        if row is None:
            raise SandboxNotFound(sandbox_id)
        return row

    @staticmethod
    def _move(row: Sandbox, new: str) -> None:
        check_move(row.state, new)
        if new != GONE:
            row.state = new

    def _route(self, row: Sandbox, ip: str) -> None:
        self._routes[row.id] = route_for(row, ip)
        self.metrics.track(row.id, row.cpu_count, row.disk_mb * 1024 * 1024)
