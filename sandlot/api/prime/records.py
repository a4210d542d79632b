"""Prime sandbox records: the lifecycle status Prime clients see, derived from both tables.

The ``sandboxes`` row is the engine's truth while a sandbox exists; the
``prime_sandboxes`` row remembers how it ended once that row is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandlot.store.models import PrimeSandbox, Sandbox

if TYPE_CHECKING:
    from sandlot.store.database import Database

TERMINAL = ("ERROR", "TERMINATED", "TIMEOUT")
TIMEOUT_SLACK = timedelta(seconds=2)
"""The reaper runs every half second; a sandbox gone within this of its deadline timed out."""

_ENGINE_STATES = {"creating": "PROVISIONING", "running": "RUNNING", "paused": "PAUSED", "killing": "TERMINATED"}


@dataclass
class View:
    """One sandbox as the Prime API shows it: engine row, façade row, or both."""

    id: str
    box: Sandbox | None
    prime: PrimeSandbox | None
    status: str
    error_type: str | None = None
    error_message: str | None = None


def _derive(prime: PrimeSandbox | None, box: Sandbox | None, now: datetime) -> tuple[str, str | None, str | None]:
    if prime is None:
        assert box is not None
        return _ENGINE_STATES.get(box.state, "RUNNING"), None, None
    if prime.status in TERMINAL:
        return prime.status, prime.error_type, prime.error_message
    if box is not None and box.state != "killing":
        return _ENGINE_STATES.get(box.state, "RUNNING"), None, None
    # gone, or going: a kill in progress is judged like its end (a timeout's kill must not
    # be recorded as TERMINATED by a poll that lands while it runs)
    if prime.status == "PENDING":
        return "PENDING", None, None
    deadline = (prime.started_at or prime.created_at) + timedelta(minutes=prime.timeout_minutes)
    if now + TIMEOUT_SLACK >= deadline:
        return "TIMEOUT", "TIMEOUT", f"Sandbox exceeded its timeout of {prime.timeout_minutes} minute(s)"
    return "TERMINATED", None, None


def view(session: Session, sandbox_id: str, prime: PrimeSandbox | None = None, box: Sandbox | None = None) -> View | None:
    """Current view of ``sandbox_id``; a newly observed end is written back once."""
    prime = prime or session.get(PrimeSandbox, sandbox_id)
    box = box or session.get(Sandbox, sandbox_id)
    if prime is None and (box is None or box.state == "killing"):
        return None
    now = datetime.now(timezone.utc)
    status, error_type, error_message = _derive(prime, box, now)
    if prime is not None and status in TERMINAL and prime.status not in TERMINAL:
        prime.status, prime.error_type, prime.error_message = status, error_type, error_message
        prime.terminated_at = prime.updated_at = now
    return View(sandbox_id, box, prime, status, error_type, error_message)


def visible_to(team_id: str, v: View | None) -> bool:
    if v is None:
        return False
    owner = v.prime.team_id if v.prime is not None else v.box.team_id if v.box is not None else None
    return owner == team_id


def get(session: Session, team_id: str, sandbox_id: str) -> View | None:
    v = view(session, sandbox_id)
    return v if visible_to(team_id, v) else None


def all_for_team(session: Session, team_id: str) -> list[View]:
    """Prime-made sandboxes (alive or ended) plus live E2B-made ones, newest first."""
    primes = {p.id: p for p in session.scalars(select(PrimeSandbox).where(PrimeSandbox.team_id == team_id))}
    boxes = {b.id: b for b in session.scalars(select(Sandbox).where(Sandbox.team_id == team_id))}
    views = []
    for sandbox_id in set(primes) | set(boxes):
        v = view(session, sandbox_id, primes.get(sandbox_id), boxes.get(sandbox_id))
        if v is not None:
            views.append(v)
    views.sort(key=lambda v: (created_at(v), v.id), reverse=True)
    return views


def by_idempotency_key(session: Session, team_id: str, key: str) -> PrimeSandbox | None:
    stmt = select(PrimeSandbox).where(PrimeSandbox.team_id == team_id, PrimeSandbox.idempotency_key == key)
    return session.scalars(stmt).first()


def created_at(v: View) -> datetime:
    if v.prime is not None:
        return v.prime.created_at
    assert v.box is not None
    return v.box.started_at


def record_death(db: "Database", sandbox_id: str, reason: str) -> None:
    """The engine saw the sandbox's container die on its own: keep why, for the Prime view."""
    with db.session() as session, session.begin():
        prime = session.get(PrimeSandbox, sandbox_id)
        if prime is None or prime.status in TERMINAL:
            return
        now = datetime.now(timezone.utc)
        prime.status = "ERROR"
        if reason == "oom":
            prime.error_type, prime.error_message = "OOM_KILLED", "The sandbox ran out of memory and was killed"
        else:
            prime.error_type, prime.error_message = "SANDBOX_EXITED", "The sandbox's init process exited unexpectedly"
        prime.terminated_at = prime.updated_at = now
