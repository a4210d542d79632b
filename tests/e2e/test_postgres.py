"""`sandlot serve` with its store on a real PostgreSQL 15 (``SANDLOT_DATABASE_URL=postgresql+psycopg://…``),
driven by the unmodified e2b SDK: migrations run on PostgreSQL at start, a sandbox is created, runs a
command, is listed and killed, and its rows are PostgreSQL's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox
from sqlalchemy import create_engine, text

from sandlot import ids
from tests import postgres
from tests.e2e.server import STARTED, Server, data_dir, sdk_pointed_at

pytestmark = pytest.mark.skipif(postgres.available() is not None, reason=str(postgres.available()))


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    with postgres.running_postgres() as pg:
        url = pg.url()
        srv = Server(workdir=tmp_path_factory.mktemp("sandlot-pg"), api_key=ids.new_api_key(),
                     extra_env={"SANDLOT_DATABASE_URL": url})
        try:
            srv.start()
            with sdk_pointed_at(srv):
                yield srv, url
        finally:
            srv.reset()   # while PostgreSQL still runs: reset reads the sandbox rows from it
            STARTED.remove(srv)
            _forget_registration(url)


def _forget_registration(url: str) -> None:
    """The server registered its database for `sandlot template gc` (templates/gc.py); this cluster
    is about to vanish, and an unreachable registered database would stop every later gc."""
    from sandlot.templates import gc

    name = hashlib.sha256(url.encode()).hexdigest()[:20] + ".json"
    (Path(data_dir()) / "templates" / gc.DATABASES_DIR / name).unlink(missing_ok=True)


def test_sandbox_lifecycle_on_postgres(pg_server: tuple[Server, str]) -> None:
    srv, url = pg_server
    sbx = Sandbox.create(timeout=120, metadata={"store": "postgres"})
    try:
        result = sbx.commands.run("echo hello from $(uname -s)")
        assert result.exit_code == 0
        assert result.stdout.strip() == "hello from Linux"
        listed = [s.sandbox_id for s in Sandbox.list(query=None).next_items()]
        assert sbx.sandbox_id in listed
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                server_version = conn.execute(text("SHOW server_version")).scalar_one()
                state = conn.execute(text("SELECT state FROM sandboxes WHERE id = :id"),
                                     {"id": sbx.sandbox_id}).scalar_one()
                heads = conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()
        finally:
            engine.dispose()
        assert str(server_version).startswith("15.")
        assert state == "running"
        assert heads >= 1
    finally:
        sbx.kill()
    assert not sbx.is_running()
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]
