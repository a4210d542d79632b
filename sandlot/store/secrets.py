"""Team secrets: write-only values, encrypted at rest with a key kept in the data dir.

The value is AES-GCM sealed with ``secrets.key`` (``sandlot/secret_keys.py``), bound to the
secret's id and version, so a copy of the database alone reveals nothing and a ciphertext
moved to another row does not open. No function here returns a value except
:func:`secret_value`, which is for host-side use (egress header injection) only: routes
serialise :class:`~sandlot.store.models.TeamSecret` rows through ``api/secrets.py``, which has
no way to reach the plaintext.

The key is per database engine (:func:`register_key`, once at start-up), so the egress code can
call ``secret_value(session, team, name)`` with just a session.
"""

from __future__ import annotations

import base64
import os
import re
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from sandlot.secret_keys import data_dir_key
from sandlot.store.models import TeamSecret

KEY_FILE = "secrets.key"
ID_PREFIX = "sec_"
NAME = re.compile(r"^[a-z0-9_-]{1,128}$")
SECRET_ID = re.compile(r"^sec_[0-9a-hjkmnp-tv-z]{26}$")
VALUE_BYTES = 64 * 1024
METADATA_ENTRIES = 32
METADATA_KEY_BYTES = 128
METADATA_VALUE_BYTES = 1024
METADATA_BYTES = 8192
PER_TEAM = 1000
"""Secrets per team (E2B has a limit and does not publish it): 409 beyond."""

_TYPEID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_KEYS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


class InvalidSecret(ValueError):
    """A name, value or metadata outside E2B's rules; the message never contains the value."""


class SecretConflict(Exception):
    """The name is taken, or the team holds :data:`PER_TEAM` secrets."""


class NoSecretKey(RuntimeError):
    """No key registered for this database: the server did not call :func:`register_key`."""


def register_key(engine: Engine, data_dir: Path) -> None:
    """Use ``data_dir/secrets.key`` (created once, 0600) for the secrets of ``engine``'s store."""
    _KEYS[engine] = data_dir_key(data_dir, KEY_FILE)


def _cipher(session: Session) -> AESGCM:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    key = _KEYS.get(engine)
    if key is None:
        raise NoSecretKey("secrets are unavailable: no key is registered for this database")
    return AESGCM(key)


def _aad(secret_id: str, version: int) -> bytes:
    return f"{secret_id}:{version}".encode()


def _seal(session: Session, secret_id: str, version: int, value: str) -> str:
    nonce = os.urandom(12)
    sealed = _cipher(session).encrypt(nonce, value.encode(), _aad(secret_id, version))
    return "v1:" + base64.b64encode(nonce + sealed).decode()


def _open(session: Session, row: TeamSecret) -> str:
    raw = base64.b64decode(row.ciphertext.removeprefix("v1:"))
    return _cipher(session).decrypt(raw[:12], raw[12:], _aad(row.id, row.current_version)).decode()


def new_secret_id() -> str:
    """``sec_`` + a TypeID suffix: a UUIDv7 in 26 lowercase Crockford base32 characters."""
    millis = time.time_ns() // 1_000_000
    number = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | int.from_bytes(os.urandom(10)) & (2**76 - 1)
    number = number & ~(0x3 << 62) | 0x2 << 62   # RFC 9562 variant bits
    chars = []
    for _ in range(26):
        chars.append(_TYPEID_ALPHABET[number & 31])
        number >>= 5
    return ID_PREFIX + "".join(reversed(chars))


def canonical_name(name: str) -> str:
    """E2B's rule: trimmed, lower-cased, 1–128 of ``[a-z0-9_-]``, never ``sec_…`` (ids)."""
    name = name.strip().lower()
    if not NAME.match(name):
        raise InvalidSecret("secret name must be 1-128 characters of letters, digits, '_' and '-'")
    if name.startswith(ID_PREFIX):
        raise InvalidSecret(f"secret names may not start with '{ID_PREFIX}' (reserved for secret ids)")
    return name


def check_value(value: str) -> None:
    size = len(value.encode())
    if size == 0:
        raise InvalidSecret("secret value must not be empty")
    if size > VALUE_BYTES:
        raise InvalidSecret(f"secret value takes {size} bytes; at most {VALUE_BYTES} are allowed")


def check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > METADATA_ENTRIES:
        raise InvalidSecret(f"metadata has {len(metadata)} entries; at most {METADATA_ENTRIES} are allowed")
    total = 0
    for key, item in metadata.items():
        if not key or len(key.encode()) > METADATA_KEY_BYTES:
            raise InvalidSecret(f"metadata keys must be 1-{METADATA_KEY_BYTES} bytes")
        if len(item.encode()) > METADATA_VALUE_BYTES:
            raise InvalidSecret(f"metadata values may take at most {METADATA_VALUE_BYTES} bytes")
        total += len(key.encode()) + len(item.encode())
    if total > METADATA_BYTES:
        raise InvalidSecret(f"metadata takes {total} bytes; at most {METADATA_BYTES} are allowed")


def find(session: Session, team_id: str, name_or_id: str) -> TeamSecret | None:
    """The team's secret by id (``sec_…``) or name; another team's is ``None`` like a missing one."""
    ref = name_or_id.strip().lower()
    if ref.startswith(ID_PREFIX):
        row = session.get(TeamSecret, ref) if SECRET_ID.match(ref) else None
        return row if row is not None and row.team_id == team_id else None
    if not NAME.match(ref):   # no query for what can't be a name (a NUL is an error on PostgreSQL)
        return None
    stmt = select(TeamSecret).where(TeamSecret.team_id == team_id, TeamSecret.name == ref)
    return session.scalars(stmt).first()


def page(session: Session, team_id: str, limit: int, after: str | None) -> tuple[list[TeamSecret], str | None]:
    """Up to ``limit`` secrets ordered by id (time-ordered: UUIDv7) after the cursor ``after``,
    and the cursor of the next page (``None`` on the last)."""
    stmt = select(TeamSecret).where(TeamSecret.team_id == team_id)
    if after and not SECRET_ID.match(after):
        raise InvalidSecret("invalid nextToken")
    if after:
        stmt = stmt.where(TeamSecret.id > after)
    rows = list(session.scalars(stmt.order_by(TeamSecret.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def create(session: Session, team_id: str, name: str, value: str, metadata: dict[str, str] | None) -> TeamSecret:
    name = canonical_name(name)
    check_value(value)
    check_metadata(metadata or {})
    if find(session, team_id, name) is not None:
        raise SecretConflict(f"a secret named '{name}' already exists")
    count = session.scalar(select(func.count()).select_from(TeamSecret).where(TeamSecret.team_id == team_id)) or 0
    if count >= PER_TEAM:
        raise SecretConflict(f"the team holds {count} secrets, the most allowed; delete some first")
    now = datetime.now(timezone.utc)
    secret_id = new_secret_id()
    row = TeamSecret(id=secret_id, team_id=team_id, name=name, current_version=1, metadata_=dict(metadata or {}),
                     ciphertext=_seal(session, secret_id, 1, value), created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def update(session: Session, row: TeamSecret, value: str, metadata: dict[str, str] | None) -> TeamSecret:
    """A new version replaces the value; metadata is replaced only when given (``{}`` clears it)."""
    check_value(value)
    if metadata is not None:
        check_metadata(metadata)
        row.metadata_ = dict(metadata)
    row.current_version += 1
    row.ciphertext = _seal(session, row.id, row.current_version, value)
    row.updated_at = datetime.now(timezone.utc)
    session.flush()
    return row


def delete(session: Session, row: TeamSecret) -> None:
    session.delete(row)
    session.flush()


def secret_value(session: Session, team_id: str, name_or_id: str) -> str | None:
    """The current plaintext of the team's secret (by ``sec_`` id or name), or ``None``.

    Host-side use only (egress header injection): never put the result in a response, a log
    line or an error message."""
    row = find(session, team_id, name_or_id)
    return _open(session, row) if row is not None else None

