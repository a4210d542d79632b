"""The node registry's rows: register (insert or refresh), heartbeat, read, drain/enable.

Plain SELECT/INSERT/UPDATE by primary key, so it behaves the same on SQLite and PostgreSQL
and any number of processes may heartbeat their own rows concurrently."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sandlot.store.models import Node

READY = "ready"
DRAINING = "draining"
UNAVAILABLE = "unavailable"
SETTABLE = (READY, DRAINING)
"""What an operator may set; ``unavailable`` is derived from a stale heartbeat, never stored."""


@dataclass(frozen=True)
class Capacity:
    cpu_count: int
    memory_mb: int
    sandbox_slots: int


def register(session: Session, node_id: str, address: str, capacity: Capacity, version: str,
             now: datetime) -> Node:
    """Insert this node, or refresh its address, capacity and start time; a drain survives restarts."""
    row = session.get(Node, node_id)
    if row is None:
        row = Node(id=node_id, status=READY)
        session.add(row)
    row.address = address
    row.cpu_count, row.memory_mb, row.sandbox_slots = capacity.cpu_count, capacity.memory_mb, capacity.sandbox_slots
    row.version = version
    row.started_at = row.last_heartbeat = now
    try:
        session.commit()
    except IntegrityError:   # another process registered the same id meanwhile: refresh its row
        session.rollback()
        return register(session, node_id, address, capacity, version, now)
    return row


def heartbeat(session: Session, node_id: str, now: datetime) -> bool:
    """Record that the node is alive; False when its row is gone (then register again)."""
    done = session.execute(update(Node).where(Node.id == node_id).values(last_heartbeat=now))
    session.commit()
    return bool(getattr(done, "rowcount", 0))


def get(session: Session, node_id: str) -> Node | None:
    return session.get(Node, node_id)


def listed(session: Session) -> list[Node]:
    return list(session.scalars(select(Node).order_by(Node.id)))


def set_status(session: Session, node_id: str, status: str) -> bool:
    """Drain or enable a node; False when there is no such node."""
    if status not in SETTABLE:
        raise ValueError(f"status must be one of {', '.join(SETTABLE)}")
    done = session.execute(update(Node).where(Node.id == node_id).values(status=status))
    session.commit()
    return bool(getattr(done, "rowcount", 0))


def effective_status(row: Node, now: datetime, stale_after_s: float) -> str:
    """``unavailable`` once the node missed its heartbeats, else what an operator set."""
    if (now - row.last_heartbeat).total_seconds() > stale_after_s:
        return UNAVAILABLE
    return row.status
