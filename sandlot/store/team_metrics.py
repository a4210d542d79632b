"""Team metrics (``GET /teams/{id}/metrics``): concurrent sandboxes and start rate over time.

Sandbox rows are deleted when a sandbox is killed, so the history lives in ``sandbox_runs``:
one row per stretch a sandbox runs (create or resume → pause or kill). The rows are written
by mapper events on :class:`Sandbox` in the same flush as the state change, whoever changes
the state (E2B or Prime façade, reaper, recovery): no caller has to remember to record it,
and the history commits or rolls back with the change itself.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, delete, event, inspect, insert, or_, select, update
from sqlalchemy.orm import Mapper, Session

from sandlot.store.models import Sandbox, SandboxRun

LIVE = frozenset({"running", "pausing"})
"""States in which a sandbox counts as running (``pausing`` has not stopped yet; a ``killing``
one has: its processes are killed before a kill answers, the teardown may go on after)."""
RETENTION = timedelta(days=31)
MAX_RANGE = timedelta(days=31)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _open_run(connection: Connection, row: Sandbox) -> None:
    connection.execute(insert(SandboxRun).values(team_id=row.team_id, sandbox_id=row.id, started_at=_now(),
                                                 ended_at=None))


def _close_runs(connection: Connection, sandbox_id: str) -> None:
    connection.execute(update(SandboxRun).where(SandboxRun.sandbox_id == sandbox_id, SandboxRun.ended_at.is_(None))
                       .values(ended_at=_now()))


@event.listens_for(Sandbox, "after_insert")
def _inserted(_mapper: Mapper[Any], connection: Connection, row: Sandbox) -> None:
    if row.state in LIVE:
        _open_run(connection, row)


@event.listens_for(Sandbox, "after_update")
def _updated(_mapper: Mapper[Any], connection: Connection, row: Sandbox) -> None:
    history = inspect(row).attrs.state.history
    if not history.added:
        return
    old = history.deleted[0] if history.deleted else None
    was, now = old in LIVE, row.state in LIVE
    if now and not was:
        _open_run(connection, row)
    elif was and not now:
        _close_runs(connection, row.id)


@event.listens_for(Sandbox, "after_delete")
def _deleted(_mapper: Mapper[Any], connection: Connection, row: Sandbox) -> None:
    _close_runs(connection, row.id)


@dataclass(frozen=True)
class Point:
    at: datetime
    concurrent: int
    """The most sandboxes running at once during the step that starts at ``at``."""
    start_rate: float
    """Starts (creates and resumes) per second during that step."""

    def to_json(self) -> dict[str, Any]:
        return {"timestamp": self.at.isoformat().replace("+00:00", "Z"), "timestampUnix": int(self.at.timestamp()),
                "concurrentSandboxes": self.concurrent, "sandboxStartRate": self.start_rate}


def step_for(span: timedelta) -> timedelta:
    """E2B's resolution by range: <1 h 5 s, <6 h 30 s, <12 h 1 min, <24 h 2 min, <7 d 5 min, else 15 min."""
    hours = span.total_seconds() / 3600
    for limit, seconds in ((1, 5), (6, 30), (12, 60), (24, 120), (24 * 7, 300)):
        if hours < limit:
            return timedelta(seconds=seconds)
    return timedelta(minutes=15)


def series(session: Session, team_id: str, start: datetime, end: datetime) -> list[Point]:
    """One point per step: steps aligned to the step size, from the one holding ``start`` to
    the one holding ``end``. A step's concurrency is its peak, so a sandbox that lived for a
    second between two samples still shows."""
    step = step_for(end - start)
    seconds = int(step.total_seconds())
    first = datetime.fromtimestamp(int(start.timestamp()) // seconds * seconds, timezone.utc)
    stmt = select(SandboxRun.started_at, SandboxRun.ended_at).where(
        SandboxRun.team_id == team_id, SandboxRun.started_at <= end,
        or_(SandboxRun.ended_at.is_(None), SandboxRun.ended_at >= first))
    runs = list(session.execute(stmt))
    starts = sorted(r.started_at for r in runs)
    changes = sorted([(r.started_at, 1) for r in runs]
                     + [(r.ended_at, -1) for r in runs if r.ended_at is not None])   # ends first at a tie
    points = []
    done, running = 0, 0
    at = first
    while at <= end:
        while done < len(changes) and changes[done][0] <= at:
            running += changes[done][1]
            done += 1
        peak, level, ahead = running, running, done
        until = at + step
        while ahead < len(changes) and changes[ahead][0] < until:
            level += changes[ahead][1]
            peak = max(peak, level)
            ahead += 1
        started = bisect.bisect_left(starts, until) - bisect.bisect_left(starts, at)
        points.append(Point(at, peak, round(started / seconds, 6)))
        at = until
    return points


def prune(session: Session) -> None:
    """Forget runs that ended before the longest range anyone can ask for."""
    session.execute(delete(SandboxRun).where(SandboxRun.ended_at < _now() - RETENTION))
