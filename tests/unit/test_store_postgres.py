"""The store layer on a real PostgreSQL 15: the migrations reach every head (and are idempotent),
and the node registry's SQL — register, heartbeat, drain, a drain surviving re-registration —
behaves as on SQLite (tests/inprocess/test_nodes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from sandlot.store import nodes as node_store
from sandlot.store.database import MIGRATIONS_DIR, Database
from tests import postgres

pytestmark = pytest.mark.skipif(postgres.available() is not None, reason=str(postgres.available()))


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    with postgres.running_postgres() as pg:
        database = Database(pg.url())
        try:
            database.migrate()
            database.migrate()   # idempotent: a second server start changes nothing
            yield database
        finally:
            database.dispose()


def test_migrations_reach_every_head(db: Database) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = set(ScriptDirectory.from_config(config).get_heads())
    with db.engine.connect() as conn:
        applied = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
        assert conn.dialect.name == "postgresql"
    assert applied == heads


def test_node_registry_on_postgres(db: Database) -> None:
    now = datetime.now(timezone.utc)
    capacity = node_store.Capacity(cpu_count=2, memory_mb=2048, sandbox_slots=64)
    with db.session() as session:
        row = node_store.register(session, "pg-node", "10.0.0.1:3000", capacity, "0.1.0", now)
        assert row.status == "ready" and row.last_heartbeat == now
        assert node_store.heartbeat(session, "pg-node", now + timedelta(seconds=10))
        assert not node_store.heartbeat(session, "nobody", now)
        assert node_store.set_status(session, "pg-node", "draining")
        assert not node_store.set_status(session, "nobody", "draining")
        with pytest.raises(ValueError):
            node_store.set_status(session, "pg-node", "unavailable")
    with db.session() as session:
        again = node_store.register(session, "pg-node", "10.0.0.2:3000", capacity, "0.1.1", now)
        assert (again.status, again.address, again.version) == ("draining", "10.0.0.2:3000", "0.1.1")
        listed = node_store.listed(session)
        assert [n.id for n in listed] == ["pg-node"]
        assert node_store.effective_status(listed[0], now + timedelta(seconds=31), 30) == "unavailable"
