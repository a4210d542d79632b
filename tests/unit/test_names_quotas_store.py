"""Store-level checks of per-team names (migration 0007) and of race-free quota reservations."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from sandlot import ids
from sandlot.quotas import QuotaExceeded, reserve_sandbox, running_sandboxes
from sandlot.settings import Settings
from sandlot.store import keys
from sandlot.store import templates as store
from sandlot.store.database import MIGRATIONS_DIR, Database
from sandlot.store.models import PrimeSandbox, Sandbox, Template


def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    return db


def _template(session, team_id: str | None, name: str, public: bool = False) -> Template:
    template, build = store.request_build(session, team_id=team_id, name=name, tags=[], cpu_count=1, memory_mb=128,
                                          disk_mb=64, envd_version="0.6.13") if team_id else (None, None)
    template.public = public
    build.layers = ["/nonexistent"]
    store.finish_build(session, build)
    return template


def test_names_are_per_team_and_foreign_public_names_need_the_namespace(tmp_path: Path) -> None:
    db = _db(tmp_path)
    with db.session() as s, s.begin():
        a, b = keys.create_team(s, "a"), keys.create_team(s, "b")
        store.register_ready(s, alias="base", team_id=None, public=True, layers=["/x"], cpu_count=1, memory_mb=128,
                             disk_mb=64, envd_version="0.6.13")
        a_app = _template(s, a.id, "app")
        b_app = _template(s, b.id, "app", public=True)
        b_python = _template(s, b.id, "python", public=True)
        assert a_app.id != b_app.id  # two teams, one name, two templates
        # bare names: own namespace, then built-ins; never another team's (public or not)
        assert store.resolve(s, a.id, "app").id == a_app.id
        assert store.resolve(s, b.id, "app").id == b_app.id
        assert store.resolve(s, a.id, "python:latest") is None
        assert store.resolve(s, a.id, "base").team_id is None
        # the full name reaches another team's public template
        assert store.resolve(s, a.id, f"{store.team_slug(b.id)}/python").id == b_python.id
        assert store.resolve(s, a.id, f"{store.team_slug(b.id)}/app").id == b_app.id
        b_app.public = False
        assert store.resolve(s, a.id, f"{store.team_slug(b.id)}/app") is None
        # writes: own slug is dropped, another's refused, built-in names reserved
        assert store.local_name(a.id, f"{store.team_slug(a.id)}/web") == "web"
        with pytest.raises(store.ForeignNamespace):
            store.request_build(s, team_id=a.id, name=f"{store.team_slug(b.id)}/app", tags=[], cpu_count=1,
                                memory_mb=128, disk_mb=64, envd_version="0.6.13")
        with pytest.raises(store.NameTaken):
            store.request_build(s, team_id=b.id, name="base", tags=[], cpu_count=1, memory_mb=128, disk_mb=64,
                                envd_version="0.6.13")
        assert store.names(s, a_app) == [f"{store.team_slug(a.id)}/app"]
        assert store.names(s, store.resolve(s, a.id, "base")) == ["base"]


def test_migration_0007_moves_global_aliases_into_their_owners_namespace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")
        command.upgrade(config, "0005")
        team = ids.new_team_id()
        slug = store.team_slug(team)
        connection.execute(sa.text("INSERT INTO teams (id, name, created_at) VALUES (:id, 'a', '2026-01-01')"), {"id": team})
        for tid, owner in (("t1", None), ("t2", team), ("t3", team), ("t4", team)):
            connection.execute(sa.text(
                "INSERT INTO templates (id, team_id, public, cpu_count, memory_mb, disk_mb, envd_version, created_at, "
                "updated_at, spawn_count) VALUES (:id, :team, 1, 1, 128, 64, 'x', '2026-01-01', '2026-01-01', 0)"),
                {"id": tid, "team": owner})
        for alias, tid in (("base", "t1"), ("app", "t2"), (f"{slug}/img", "t3"), ("acme/tool", "t4")):
            connection.execute(sa.text("INSERT INTO template_aliases (alias, template_id) VALUES (:a, :t)"),
                               {"a": alias, "t": tid})
    db = Database(url)
    db.migrate()
    with db.session() as s:
        rows = {tuple(r) for r in s.execute(sa.text("SELECT namespace, alias, template_id FROM template_aliases"))}
        assert rows == {("", "base", "t1"), (slug, "app", "t2"), (slug, "img", "t3"), (slug, "acme/tool", "t4")}
        assert store.resolve(s, team, f"{slug}/img:v1").id == "t3"  # a Prime image path keeps working
        assert store.resolve(s, team, "acme/tool").id == "t4"       # an old slashed name, for its owner
        assert store.resolve(s, ids.new_team_id(), "acme/tool") is None


def _row(team_id: str, sandbox_id: str) -> Sandbox:
    now = datetime.now(timezone.utc)
    return Sandbox(id=sandbox_id, team_id=team_id, template_id="t", build_id="b", state="creating", started_at=now,
                   end_at=now + timedelta(seconds=60), cpu_count=1, memory_mb=128, disk_mb=64, envd_version="x",
                   envd_access_token="x")


def test_forty_concurrent_reservations_on_separate_connections_admit_exactly_the_limit(tmp_path: Path) -> None:
    """Each thread has its own connection, as several API processes would: the team row lock
    (SQLite's write lock here) is what keeps the count exact, not the event loop."""
    db = _db(tmp_path)
    settings = Settings(quota_concurrent_sandboxes=5, data_dir=tmp_path)
    with db.session() as s, s.begin():
        team = keys.create_team(s, "racer").id
    barrier = threading.Barrier(40)
    outcomes: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            with db.session() as session, session.begin():
                reserve_sandbox(session, settings, team)
                session.add(_row(team, f"i{i:020d}"))
            outcomes.append("ok")
        except QuotaExceeded as exc:
            assert exc.status == 429 and "maximum number of concurrent E2B sandboxes (5)" in exc.message
            outcomes.append("429")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5 and outcomes.count("429") == 35
    with db.session() as s:
        assert running_sandboxes(s, team) == 5


def test_paused_sandboxes_free_their_slot_and_pending_prime_rows_hold_one(tmp_path: Path) -> None:
    db = _db(tmp_path)
    settings = Settings(quota_concurrent_sandboxes=2, data_dir=tmp_path)
    with db.session() as s, s.begin():
        team = keys.create_team(s, "t").id
        s.add(_row(team, "i1"))
        now = datetime.now(timezone.utc)
        s.add(PrimeSandbox(id="i2", team_id=team, name="p", docker_image="base", timeout_minutes=5, status="PENDING",
                           created_at=now, updated_at=now))
    with db.session() as s, s.begin():
        assert running_sandboxes(s, team) == 2
        with pytest.raises(QuotaExceeded):
            reserve_sandbox(s, settings, team)
        reserve_sandbox(s, settings, team, "i2")  # the launch of the PENDING row uses its own slot
    with db.session() as s, s.begin():
        s.get(Sandbox, "i1").state = "paused"
    with db.session() as s, s.begin():
        reserve_sandbox(s, settings, team)


def test_migration_0008_keeps_snapshots_and_makes_their_names_per_team(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'snap.sqlite'}"
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    columns = ("id, team_id, name, source_sandbox_id, template_id, build_id, cpu_count, memory_mb, disk_mb, "
               "envd_version, envd_access_token, env_vars, memory, path, created_at")
    insert = sa.text(f"INSERT INTO snapshots ({columns}) VALUES (:id, :team, :name, 's', 't', 'b', 1, 128, 64, 'x', "
                     "'tok', '{}', 1, '/p', '2026-01-01')")
    a, b = ids.new_team_id(), ids.new_team_id()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        for team in (a, b):
            connection.execute(sa.text("INSERT INTO teams (id, name, created_at) VALUES (:id, 'x', '2026-01-01')"),
                               {"id": team})
        connection.execute(insert, {"id": "old", "team": a, "name": "nightly"})
    engine.dispose()
    db = Database(url)
    db.migrate()
    with db.engine.begin() as connection:
        assert connection.execute(sa.text("SELECT team_id, name, path FROM snapshots")).all() == [(a, "nightly", "/p")]
        connection.execute(insert, {"id": "theirs", "team": b, "name": "nightly"})   # another team, same name
    with pytest.raises(sa.exc.IntegrityError):
        with db.engine.begin() as connection:
            connection.execute(insert, {"id": "again", "team": a, "name": "nightly"})


def test_another_teams_snapshot_named_like_mine_does_not_hide_it(tmp_path: Path) -> None:
    from sandlot.store import snapshots as snapshot_store
    from sandlot.store.models import Snapshot

    db = _db(tmp_path)
    with db.session() as s, s.begin():
        a, b = keys.create_team(s, "a").id, keys.create_team(s, "b").id

        def snap(id_: str, team: str, name: str | None) -> Snapshot:
            return Snapshot(id=id_, team_id=team, name=name, source_sandbox_id="s", template_id="t", build_id="b",
                            cpu_count=1, memory_mb=128, disk_mb=64, envd_version="x", envd_access_token="x",
                            env_vars={}, memory=True, path="/p")

        s.add_all([snap("mineid", a, "shared"), snap("theirs", b, "mineid"), snap("theirs2", b, "shared")])
    with db.session() as s:
        assert snapshot_store.resolve(s, a, "mineid").id == "mineid"
        assert snapshot_store.resolve(s, a, "shared").id == "mineid"
        assert snapshot_store.resolve(s, b, "shared").id == "theirs2"
        assert snapshot_store.resolve(s, a, "theirs") is None
