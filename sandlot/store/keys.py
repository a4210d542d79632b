"""Teams and API keys: keys are stored hashed and resolved to a team per request."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandlot import ids
from sandlot.store.models import ApiKey, Team

DEFAULT_TEAM_NAME = "default"


def get_or_create_default_team(session: Session) -> Team:
    team = session.scalars(select(Team).where(Team.name == DEFAULT_TEAM_NAME)).first()
    if team is None:
        team = Team(id=ids.new_team_id(), name=DEFAULT_TEAM_NAME)
        session.add(team)
        session.flush()
    return team


def create_team(session: Session, name: str) -> Team:
    team = Team(id=ids.new_team_id(), name=name)
    session.add(team)
    session.flush()
    return team


def find_team(session: Session, team_id_or_name: str) -> Team | None:
    team = session.get(Team, team_id_or_name)
    if team is None:
        team = session.scalars(select(Team).where(Team.name == team_id_or_name)).first()
    return team


def add_key(session: Session, team: Team, name: str, key: str | None = None) -> tuple[ApiKey, str]:
    """Store a key (given or freshly generated); returns the row and the plaintext key."""
    key = key or ids.new_api_key()
    row = ApiKey(
        id=ids.new_build_id(), team_id=team.id, name=name, key_hash=ids.hash_secret(key), key_mask=ids.mask_key(key)
    )
    session.add(row)
    session.flush()
    return row, key


def has_key(session: Session, key: str) -> bool:
    return session.scalars(select(ApiKey.id).where(ApiKey.key_hash == ids.hash_secret(key))).first() is not None


def team_for_key(session: Session, key: str) -> str | None:
    """Team id owning ``key``, or ``None`` for an unknown or revoked key."""
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == ids.hash_secret(key))).first()
    if row is None:
        return None
    now = datetime.now(timezone.utc)
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now  # coarse, so reads don't turn into a write per request
    return row.team_id


def list_keys(session: Session) -> list[tuple[ApiKey, Team]]:
    rows = session.execute(select(ApiKey, Team).join(Team).order_by(ApiKey.created_at))
    return [(key, team) for key, team in rows]


def revoke_key(session: Session, key_id_or_key: str) -> bool:
    row = session.get(ApiKey, key_id_or_key)
    if row is None:
        row = session.scalars(select(ApiKey).where(ApiKey.key_hash == ids.hash_secret(key_id_or_key))).first()
    if row is None:
        return False
    session.delete(row)
    return True
