"""Queries for lifecycle events and webhooks (per team; bounded by the operator's retention)."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from sandlot.store.models import LifecycleEvent, Webhook


# --- events -----------------------------------------------------------------------------------


def add(session: Session, team_id: str, sandbox_id: str, body: dict[str, Any], timestamp: datetime) -> None:
    session.add(LifecycleEvent(id=body["id"], team_id=team_id, sandbox_id=sandbox_id, type=body["type"],
                               timestamp=timestamp, body=body))


def page(session: Session, team_id: str, *, sandbox_id: str | None, offset: int, limit: int,
         order_asc: bool, types: Sequence[str]) -> list[dict[str, Any]]:
    """One page of the team's events (one sandbox's when ``sandbox_id``), newest first unless ``order_asc``."""
    query = select(LifecycleEvent.body).where(LifecycleEvent.team_id == team_id)
    if sandbox_id is not None:
        query = query.where(LifecycleEvent.sandbox_id == sandbox_id)
    if types:
        query = query.where(LifecycleEvent.type.in_(list(types)))
    order = LifecycleEvent.seq.asc() if order_asc else LifecycleEvent.seq.desc()
    return [dict(body) for body in session.scalars(query.order_by(order).offset(offset).limit(limit))]


def last_of(session: Session, team_id: str, sandbox_id: str, types: Sequence[str]) -> dict[str, Any] | None:
    """The sandbox's newest event of one of ``types`` (where its current execution began)."""
    query = (select(LifecycleEvent.body)
             .where(LifecycleEvent.team_id == team_id, LifecycleEvent.sandbox_id == sandbox_id,
                    LifecycleEvent.type.in_(list(types)))
             .order_by(LifecycleEvent.seq.desc()).limit(1))
    body = session.scalars(query).first()
    return dict(body) if body is not None else None


def prune(session: Session, team_id: str, *, keep: int, older_than: datetime | None) -> None:
    """Delete the team's events beyond its newest ``keep`` and (server-wide) those before ``older_than``."""
    if older_than is not None:
        session.execute(delete(LifecycleEvent).where(LifecycleEvent.timestamp < older_than))
    count = session.scalar(select(func.count()).select_from(LifecycleEvent).where(LifecycleEvent.team_id == team_id))
    if count is not None and count > keep:
        cutoff = session.scalar(select(LifecycleEvent.seq).where(LifecycleEvent.team_id == team_id)
                                .order_by(LifecycleEvent.seq.desc()).offset(keep).limit(1))
        if cutoff is not None:
            session.execute(delete(LifecycleEvent).where(LifecycleEvent.team_id == team_id,
                                                         LifecycleEvent.seq <= cutoff))


# --- webhooks -----------------------------------------------------------------------------------

KEY_FILE = "webhooks.key"
"""AES-GCM key in the data dir that seals signature secrets: a copy of the database alone
does not let anyone forge a team's deliveries."""


def seal_secret(key: bytes, webhook_id: str, secret: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, secret.encode(), webhook_id.encode())
    return "v1:" + base64.b64encode(nonce + sealed).decode()


def open_secret(key: bytes, webhook_id: str, sealed: str) -> str:
    """The signature secret (``InvalidTag`` when the row or key do not match)."""
    raw = base64.b64decode(sealed.removeprefix("v1:"))
    return AESGCM(key).decrypt(raw[:12], raw[12:], webhook_id.encode()).decode()



def webhooks(session: Session, team_id: str) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.team_id == team_id)
                                .order_by(Webhook.created_at, Webhook.id)))


def webhook(session: Session, team_id: str, webhook_id: str) -> Webhook | None:
    """The team's webhook; ``None`` for none and for another team's."""
    row = session.get(Webhook, webhook_id)
    return row if row is not None and row.team_id == team_id else None


def count_webhooks(session: Session, team_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Webhook).where(Webhook.team_id == team_id)) or 0


def subscribed(session: Session, team_id: str, event_type: str) -> list[Webhook]:
    """The team's enabled webhooks that want ``event_type``."""
    return [w for w in webhooks(session, team_id) if w.enabled and event_type in (w.events or [])]
