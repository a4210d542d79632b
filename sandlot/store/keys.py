"""Teams and API keys: keys are stored hashed and resolved to a team per request."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandlot import ids
from sandlot.store.models import AccessToken, ApiKey, Team

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


def key_row(session: Session, key: str) -> ApiKey | None:
    """The stored row of a presented key (the dashboard keeps its id, never the key)."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == ids.hash_secret(key))).first()


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


# --- E2B's /api-keys and /access-tokens (issue 15) -------------------------------------------

ACCESS_TOKEN_PREFIX = "sk_e2b_"
API_KEY_PREFIX = "e2b_"


def key_mask(row: ApiKey) -> dict[str, object]:
    """E2B's ``IdentifierMaskingDetails`` from the stored mask (``e2b_`` + 4 chars … last 4):
    the value's first 2 and last 4 characters, never more."""
    return {"prefix": API_KEY_PREFIX, "valueLength": 40,
            "maskedValuePrefix": row.key_mask[len(API_KEY_PREFIX):len(API_KEY_PREFIX) + 2],
            "maskedValueSuffix": row.key_mask[-4:]}


def token_mask(row: AccessToken) -> dict[str, object]:
    return {"prefix": ACCESS_TOKEN_PREFIX, "valueLength": 40,
            "maskedValuePrefix": row.token_mask[:2], "maskedValueSuffix": row.token_mask[-4:]}


def team_keys(session: Session, team_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.team_id == team_id).order_by(ApiKey.created_at)))


def team_key(session: Session, team_id: str, key_id: str) -> ApiKey | None:
    """The team's key by id; another team's is ``None``, like a missing one."""
    row = session.get(ApiKey, key_id)
    return row if row is not None and row.team_id == team_id else None


def _new_token() -> str:
    return ACCESS_TOKEN_PREFIX + secrets.token_hex(20)


def add_access_token(session: Session, team_id: str, name: str, *,
                     refreshable: bool = False) -> tuple[AccessToken, str, str | None]:
    """A new token (and, for the CLI login, a refresh token); the plaintexts are returned once."""
    token = _new_token()
    refresh = secrets.token_urlsafe(32) if refreshable else None
    value = token[len(ACCESS_TOKEN_PREFIX):]
    row = AccessToken(id=ids.new_build_id(), team_id=team_id, name=name, token_hash=ids.hash_secret(token),
                      token_mask=f"{value[:2]}…{value[-4:]}",
                      refresh_hash=ids.hash_secret(refresh) if refresh else None)
    session.add(row)
    session.flush()
    return row, token, refresh


def team_for_access_token(session: Session, token: str) -> str | None:
    row = session.scalars(select(AccessToken).where(AccessToken.token_hash == ids.hash_secret(token))).first()
    return row.team_id if row is not None else None


def delete_access_token(session: Session, team_id: str, token_id: str) -> bool:
    row = session.get(AccessToken, token_id)
    if row is None or row.team_id != team_id:
        return False
    session.delete(row)
    return True


def refresh_access_token(session: Session, refresh: str) -> tuple[AccessToken, str, str] | None:
    """OAuth's refresh grant: the old token and refresh token stop working, new ones are returned."""
    row = session.scalars(select(AccessToken).where(AccessToken.refresh_hash == ids.hash_secret(refresh))).first()
    if row is None:
        return None
    team_id, name = row.team_id, row.name
    session.delete(row)
    session.flush()
    new_row, token, new_refresh = add_access_token(session, team_id, name, refreshable=True)
    assert new_refresh is not None
    return new_row, token, new_refresh


def revoke_access_token(session: Session, token_or_refresh: str) -> bool:
    """OAuth's revocation: the token named by either its access or its refresh value goes."""
    digest = ids.hash_secret(token_or_refresh)
    row = session.scalars(select(AccessToken).where(
        (AccessToken.token_hash == digest) | (AccessToken.refresh_hash == digest))).first()
    if row is None:
        return False
    session.delete(row)
    return True
