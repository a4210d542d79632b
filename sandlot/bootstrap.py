"""One-time and every-start preparation: data dir, schema, first API key, base template.

Runs synchronously before the server accepts traffic, so `sandlot serve` on a
fresh machine ends up ready with no other command.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from sandlot.runtime import idmap
from sandlot.settings import Settings
from sandlot.store import keys
from sandlot.store import templates as template_store
from sandlot.store.database import Database

Progress = Callable[[str], None]

PREPARE_LOCK = 0x5A4D_0001
"""PostgreSQL advisory lock key held while a server migrates and seeds the shared store."""


def prepare_store(settings: Settings, db: Database) -> str | None:
    """Migrate and make sure an API key exists; returns a key that was created just now."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.userns:   # sandbox root (an unprivileged uid) must traverse it: docs/security/userns.md
        idmap.open_dir_to_range(settings.data_dir, idmap.IdRange.parse(settings.userns_range))
        if settings.images_dir is not None:   # the base rootfs and envd runtime live there
            settings.images_dir.mkdir(parents=True, exist_ok=True)
            idmap.open_dir_to_range(settings.images_dir, idmap.IdRange.parse(settings.userns_range))
    else:   # 0710 to a range's group stays for the user-namespaced servers sharing the data dir
        os.chmod(settings.data_dir, 0o710 if settings.data_dir.stat().st_gid != 0 else 0o700)
    with db.exclusive(PREPARE_LOCK):
        db.migrate()
        if settings.userns:   # the range's root may traverse the data dir: the database is root's alone
            for path in settings.data_dir.glob("sandlot.db*"):
                os.chmod(path, 0o600)
        return _ensure_key(settings, db)


def _ensure_key(settings: Settings, db: Database) -> str | None:
    created: str | None = None
    generated = False
    with db.session() as session, session.begin():
        team = keys.get_or_create_default_team(session)
        if settings.api_key is not None:
            # the operator's own key: stored, never written to the key file (other servers
            # sharing the data dir, e.g. tests with their own database, must not clobber it)
            if not keys.has_key(session, settings.api_key):
                keys.add_key(session, team, "bootstrap", settings.api_key)
                created = settings.api_key
        elif not keys.list_keys(session) or _stale_key_file(settings.api_key_file, session):
            _, created = keys.add_key(session, team, "default")
            generated = True
    if generated and created is not None:
        _write_secret(settings.api_key_file, created + "\n")
    return created


def _stale_key_file(path: Path, session: Session) -> bool:
    """The key file names a key this database doesn't know (e.g. the database was replaced)."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return False
    return bool(key) and not keys.has_key(session, key)


def _write_secret(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(path, 0o600)


def base_rootfs_dir(settings: Settings) -> Path:
    """The current base recipe's rootfs: ``<templates>/base/<recipe id>/rootfs``. Older
    recipes' dirs (and the pre-recipe ``base/rootfs``) stay for what was built on them."""
    from sandlot.templates.base import base_rootfs_path

    return base_rootfs_path(settings.base_dir)


def prepare_images(settings: Settings, progress: Progress) -> None:
    """Build the envd runtime and the ``base`` rootfs if they are missing (slow once, then
    cached; a changed base recipe builds once more, next to the old one)."""
    from sandlot.runtime.envd_bundle import build_envd_runtime
    from sandlot.templates.base import ensure_base

    build_envd_runtime(settings.envd_runtime_dir, progress=progress)
    ensure_base(settings.base_dir, progress=progress)


def register_base_template(settings: Settings, db: Database, envd_version: str) -> None:
    with db.exclusive(PREPARE_LOCK), db.session() as session, session.begin():
        template_store.register_ready(
            session,
            alias="base",
            team_id=None,
            public=True,
            layers=[str(base_rootfs_dir(settings))],
            cpu_count=settings.default_cpu_count,
            memory_mb=settings.default_memory_mb,
            disk_mb=settings.default_disk_mb,
            envd_version=envd_version,
        )
