"""Identifiers and secrets in the shapes E2B clients expect."""

from __future__ import annotations

import hashlib
import secrets
import uuid

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _random_chars(count: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(count))


def new_sandbox_id() -> str:
    """``i`` + 20 lowercase alphanumerics: no dashes, so ``{port}-{id}.{domain}`` parses."""
    return "i" + _random_chars(20)


def new_template_id() -> str:
    return _random_chars(20)


def new_build_id() -> str:
    return str(uuid.uuid4())


def new_team_id() -> str:
    return str(uuid.uuid4())


def new_api_key() -> str:
    """``e2b_`` + 40 lowercase hex, the format E2B clients validate."""
    return "e2b_" + secrets.token_hex(20)


def new_access_token() -> str:
    return secrets.token_hex(32)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def mask_key(key: str) -> str:
    return f"{key[:8]}…{key[-4:]}"
