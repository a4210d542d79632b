"""Sandbox rows: what the API lists and what a restarted server recovers."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from sandlot.store.models import Sandbox

LIVE_STATES = ("creating", "running", "paused", "pausing", "resuming")
VISIBLE_STATES = ("running", "paused", "pausing", "resuming")
"""States the API shows: ``pausing`` counts as paused, ``resuming`` as running."""


def get_for_team(session: Session, team_id: str, sandbox_id: str) -> Sandbox | None:
    """The team's sandbox or ``None`` — another team's sandbox is indistinguishable from a missing one."""
    row = session.get(Sandbox, sandbox_id)
    if row is None or row.team_id != team_id or row.state not in VISIBLE_STATES:
        return None
    return row


def _on(node_id: str | None) -> list[ColumnElement[bool]]:
    """The rows of one node (``sandlot node``), or every row (``node_id=None``: a single box owns them all)."""
    return [] if node_id is None else [Sandbox.node_id == node_id]


def all_live(session: Session, node_id: str | None = None) -> list[Sandbox]:
    return list(session.scalars(select(Sandbox).where(Sandbox.state.in_(LIVE_STATES), *_on(node_id))))


def in_states(session: Session, states: tuple[str, ...], node_id: str | None = None) -> list[Sandbox]:
    return list(session.scalars(select(Sandbox).where(Sandbox.state.in_(states), *_on(node_id))))


def expired(session: Session, now: datetime, node_id: str | None = None) -> list[Sandbox]:
    return list(session.scalars(select(Sandbox).where(Sandbox.state == "running", Sandbox.end_at <= now,
                                                      *_on(node_id))))


def paused_before(session: Session, cutoff: datetime, node_id: str | None = None) -> list[Sandbox]:
    return list(session.scalars(select(Sandbox).where(Sandbox.state == "paused", Sandbox.paused_at <= cutoff,
                                                      *_on(node_id))))


def held_by(session: Session, node_id: str, sandbox_ids: list[str]) -> set[str]:
    """Which of ``sandbox_ids`` have a row that ``node_id`` holds."""
    return set(session.scalars(select(Sandbox.id).where(Sandbox.id.in_(sandbox_ids), Sandbox.node_id == node_id)))


def count_running(session: Session, team_id: str) -> int:
    return len(list(session.scalars(select(Sandbox.id).where(Sandbox.team_id == team_id, Sandbox.state == "running"))))


@dataclass(frozen=True)
class PageCursor:
    """Position after the last item of a page: (startedAt, sandboxID)."""

    started_at: datetime
    sandbox_id: str

    def encode(self) -> str:
        raw = f"{self.started_at.isoformat()}__{self.sandbox_id}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "PageCursor":
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
        started, sandbox_id = raw.split("__", 1)
        return cls(datetime.fromisoformat(started), sandbox_id)


def page(
    session: Session,
    team_id: str,
    *,
    states: list[str],
    metadata: dict[str, str],
    ascending: bool,
    limit: int,
    after: PageCursor | None,
    started_after: datetime | None = None,
    template_ids: list[str] | None = None,
) -> tuple[list[Sandbox], PageCursor | None]:
    """One page of the team's sandboxes plus the cursor of the next page (``None`` on the last)."""
    # transitional states show as their API state: pausing = paused, resuming = running
    states = list(states) + [{"paused": "pausing", "running": "resuming"}[s] for s in states if s in ("paused", "running")]
    stmt = select(Sandbox).where(Sandbox.team_id == team_id, Sandbox.state.in_(states))
    if started_after is not None:
        stmt = stmt.where(Sandbox.started_at >= started_after)
    if template_ids is not None:
        stmt = stmt.where(Sandbox.template_id.in_(template_ids))
    if ascending:
        stmt = stmt.order_by(Sandbox.started_at.asc(), Sandbox.id.asc())
        if after is not None:
            stmt = stmt.where(
                or_(Sandbox.started_at > after.started_at, and_(Sandbox.started_at == after.started_at, Sandbox.id > after.sandbox_id))
            )
    else:
        stmt = stmt.order_by(Sandbox.started_at.desc(), Sandbox.id.asc())
        if after is not None:
            stmt = stmt.where(
                or_(Sandbox.started_at < after.started_at, and_(Sandbox.started_at == after.started_at, Sandbox.id > after.sandbox_id))
            )
    # Metadata is JSON: filter in Python so the query stays portable across SQLite and PostgreSQL.
    result: list[Sandbox] = []
    for row in session.scalars(stmt):
        if all((row.metadata_ or {}).get(k) == v for k, v in metadata.items()):
            result.append(row)
            if len(result) > limit:
                break
    if len(result) > limit:
        last = result[limit - 1]
        return result[:limit], PageCursor(last.started_at, last.id)
    return result, None


def hot_paused(session: Session, node_id: str | None = None) -> list[Sandbox]:
    """Paused sandboxes whose memory is still live (``pause_hot``), oldest pause first."""
    return list(session.scalars(select(Sandbox).where(Sandbox.state == "paused", Sandbox.pause_hot.is_(True),
                                                      *_on(node_id)).order_by(Sandbox.paused_at)))
