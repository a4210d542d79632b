"""Snapshot rows: saved sandboxes that new sandboxes (``Sandbox.create(<snapshot>)``) start from."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from sandlot.store.models import Snapshot


def resolve(session: Session, team_id: str | None, ref: str, *, any_team: bool = False) -> Snapshot | None:
    """By id (first) or name; another team's snapshot is indistinguishable from a missing one
    and cannot hide the caller's (names are per team, migration 0008)."""
    stmt = select(Snapshot).where(or_(Snapshot.id == ref, Snapshot.name == ref))
    if not any_team:
        stmt = stmt.where(Snapshot.team_id == team_id)
    rows = list(session.scalars(stmt))
    return next((r for r in rows if r.id == ref), rows[0] if rows else None)


def page(session: Session, team_id: str, *, sandbox_id: str | None, name: str | None,
         limit: int, after: str | None) -> tuple[list[Snapshot], str | None]:
    """Newest first; the cursor is the id of the last row of the page."""
    stmt = select(Snapshot).where(Snapshot.team_id == team_id)
    if sandbox_id:
        stmt = stmt.where(Snapshot.source_sandbox_id == sandbox_id)
    if name:
        stmt = stmt.where(Snapshot.name == name)
    rows = list(session.scalars(stmt.order_by(Snapshot.created_at.desc(), Snapshot.id.asc())))
    if after is not None:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def all_paths(session: Session) -> set[str]:
    return {row.path for row in session.scalars(select(Snapshot))}
