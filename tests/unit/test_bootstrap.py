"""The API key file belongs to the data dir's own server: only a generated key is written there."""

from __future__ import annotations

from pathlib import Path

from sandlot import ids
from sandlot.bootstrap import prepare_store
from sandlot.settings import Settings
from sandlot.store import keys
from sandlot.store.database import Database


def _settings(data_dir: Path, db_name: str, api_key: str | None = None) -> Settings:
    return Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / db_name}", api_key=api_key)


def test_generated_key_is_written_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "a.db")
    db = Database(settings.effective_database_url)
    created = prepare_store(settings, db)
    assert created and settings.api_key_file.read_text().strip() == created
    assert (settings.api_key_file.stat().st_mode & 0o777) == 0o600
    assert prepare_store(settings, db) is None  # second start: nothing new, file unchanged
    assert settings.api_key_file.read_text().strip() == created


def test_bootstrap_key_from_env_never_touches_the_file(tmp_path: Path) -> None:
    own = prepare_store(_settings(tmp_path, "own.db"), Database(f"sqlite:///{tmp_path / 'own.db'}"))
    other_key = ids.new_api_key()
    other = _settings(tmp_path, "other.db", api_key=other_key)  # e.g. a test server sharing the data dir
    other_db = Database(other.effective_database_url)
    assert prepare_store(other, other_db) == other_key
    assert other.api_key_file.read_text().strip() == own
    with other_db.session() as session:
        assert keys.has_key(session, other_key)


def test_stale_key_file_is_replaced(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "a.db")
    db = Database(settings.effective_database_url)
    prepare_store(settings, db)
    settings.api_key_file.write_text(ids.new_api_key() + "\n")  # a key this database never had
    fresh = prepare_store(settings, db)
    assert fresh and settings.api_key_file.read_text().strip() == fresh
    with db.session() as session:
        assert keys.has_key(session, fresh)
