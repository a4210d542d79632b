"""`sandlot template gc`: what is referenced anywhere on the machine, or young, stays."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandlot import ids
from sandlot.cli import app
from sandlot.store.database import Database
from sandlot.store.models import Build, Template
from sandlot.templates import gc
from sandlot.templates.layers import LayerStore

DAY = 24 * 3600


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "templates" / "base" / "rootfs").mkdir(parents=True)
    return tmp_path


def _store(data: Path) -> LayerStore:
    store = LayerStore(data / "templates" / "layers", "t1")
    store.start()
    return store


def _layer(data: Path, name: str, age_s: float = 2 * DAY) -> Path:
    """A committed layer with one file, last used ``age_s`` ago; returns its ``fs`` path."""
    store = _store(data)
    upper = store.staging()
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / name).write_bytes(b"x" * 10000)
    layer = store.commit(name * 4, upper, {"step": f"RUN {name}"})
    assert layer.fs is not None
    _age(layer.fs.parent, "meta.json", age_s)
    return layer.fs


def _image(data: Path, digest: str, age_s: float = 2 * DAY) -> Path:
    entry = data / "templates" / "images" / f"sha256-{digest}"
    (entry / "rootfs" / "bin").mkdir(parents=True)
    (entry / "rootfs" / "bin" / "sh").write_bytes(b"y" * 5000)
    (entry / "config.json").write_text("{}")
    _age(entry, "config.json", age_s)
    return entry / "rootfs"


def _age(entry: Path, marker: str, age_s: float) -> None:
    then = time.time() - age_s
    os.utime(entry / marker, (then, then))
    os.utime(entry, (then, then))


def _names(entries: list[gc.Entry]) -> set[str]:
    return {e.path.name for e in entries}


def _json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_each_kind_of_reference_keeps_a_layer(data: Path) -> None:
    by_build, by_sandbox, by_snapshot, by_ready, unused = (_layer(data, n) for n in "abcde")
    image_used, image_unused = _image(data, "1" * 64), _image(data, "2" * 64)
    _json(data / "runtime" / "inst2" / "sandboxes" / "s1" / "runtime.json", {"layers": [str(by_sandbox)]})
    _json(data / "snapshots" / "inst3" / "snap1" / "snapshot.json", {"layers": [str(by_snapshot), str(image_used)]})
    _json(data / "templates" / "snapshots" / "inst4" / "bld1" / "snapshot.json", {"layers": [str(by_ready)]})
    referenced = {str(by_build)} | gc.disk_references(data)

    planned = gc.plan(data / "templates", referenced, DAY)

    assert _names(planned) == {unused.parent.name, image_unused.parent.name}
    assert all(e.bytes >= 10000 or e.kind == "images" for e in planned)


def test_build_rows_of_every_status_are_references(data: Path) -> None:
    ready, failed = _layer(data, "a"), _layer(data, "b")
    url = f"sqlite:///{data / 'sandlot.db'}"
    db = Database(url)
    db.migrate()
    with db.session() as session, session.begin():
        template = Template(id="tpl", public=False, cpu_count=1, memory_mb=512, disk_mb=1024, envd_version="x")
        session.add(template)
        session.flush()
        for status, layers in (("ready", [str(ready), str(data / "templates" / "base" / "rootfs")]),
                               ("building", [str(failed)]), ("error", [])):
            session.add(Build(id=ids.new_build_id(), template_id="tpl", status=status, cpu_count=1, memory_mb=512,
                              disk_mb=1024, envd_version="x", layers=layers))
    db.dispose()

    assert gc.database_references(url) == {str(ready), str(failed), str(data / "templates" / "base" / "rootfs")}
    assert gc.plan(data / "templates", gc.database_references(url) or set(), 0) == []


def test_young_entries_stay_and_a_cache_hit_makes_an_entry_young(data: Path) -> None:
    young = _layer(data, "a", age_s=3600)
    old = _layer(data, "b")
    image = _image(data, "3" * 64)
    assert _names(gc.plan(data / "templates", set(), DAY)) == {old.parent.name, image.parent.name}

    assert _store(data).lookup("b" * 4) is not None  # a build's cache hit
    assert gc.keep_alive(image.parent, "images")      # ImageStore's cache hit
    assert gc.plan(data / "templates", set(), DAY) == []
    assert young.is_dir()


def test_delete_uses_tombstones_and_a_gc_layer_is_a_cache_miss_then_rebuilt(data: Path) -> None:
    fs = _layer(data, "a")
    store = _store(data)
    planned = gc.plan(data / "templates", set(), DAY)
    assert _names(planned) == {fs.parent.name}

    deleted, kept = gc.delete(planned, DAY)

    assert _names(deleted) == {fs.parent.name} and kept == []
    assert not fs.parent.exists()
    assert not [p for p in (data / "templates" / "layers").iterdir() if p.name.startswith(gc.TOMBSTONE_PREFIX)]
    assert store.lookup("a" * 4) is None
    upper = store.staging()
    upper.mkdir()
    (upper / "again").write_text("rebuilt")
    rebuilt = store.commit("a" * 4, upper, {"step": "RUN a"})
    assert rebuilt.fs == fs and (fs / "again").read_text() == "rebuilt"


def test_crash_leftovers_are_removed_and_lookup_never_sees_them(data: Path, monkeypatch) -> None:
    fs = _layer(data, "a")
    monkeypatch.setattr(gc.shutil, "rmtree", lambda *_a, **_k: None)  # crash between rename and removal
    gc.delete(gc.plan(data / "templates", set(), DAY), DAY)
    monkeypatch.undo()
    [tomb] = [p for p in fs.parent.parent.iterdir() if p.name.startswith(gc.TOMBSTONE_PREFIX)]
    assert not fs.parent.exists() and (tomb / "fs" / "etc" / "a").is_file()
    assert _store(data).lookup("a" * 4) is None

    planned = gc.plan(data / "templates", set(), DAY)  # age does not matter for leftovers
    assert [(e.path, e.tombstone) for e in planned] == [(tomb, True)]
    gc.delete(planned, DAY)
    assert not tomb.exists()


def test_an_entry_used_between_plan_and_delete_is_kept(data: Path) -> None:
    fs = _layer(data, "a")
    planned = gc.plan(data / "templates", set(), DAY)
    assert _store(data).lookup("a" * 4) is not None

    deleted, kept = gc.delete(planned, DAY)

    assert deleted == [] and _names(kept) == {fs.parent.name} and fs.is_dir()


def test_staging_base_and_files_are_never_candidates(data: Path) -> None:
    store = _store(data)
    (store.staging_root / "work").mkdir(parents=True)
    (data / "templates" / "files" / "team").mkdir(parents=True)
    for path in (store.staging_root, data / "templates" / "base", data / "templates" / "files"):
        os.utime(path, (0, 0))
    assert gc.plan(data / "templates", set(), 0) == []


def test_only_restricts_to_given_keys_digests_and_paths(data: Path) -> None:
    a, b, c = _layer(data, "a"), _layer(data, "b"), _layer(data, "c")
    image = _image(data, "4" * 64)
    only = ["a" * 4, str(b), f"sha256:{'4' * 64}"]
    assert _names(gc.plan(data / "templates", set(), 0, only=only)) == {a.parent.name, b.parent.name,
                                                                         image.parent.name}
    assert c.is_dir()


def test_registered_databases(data: Path, tmp_path: Path) -> None:
    db_file = tmp_path / "other.db"
    conn = sqlite3.connect(db_file)
    conn.execute("CREATE TABLE builds (layers TEXT)")
    conn.execute("INSERT INTO builds VALUES (?)", (json.dumps(["/x/layers/k/fs"]),))
    conn.commit()
    conn.close()
    gc.register_database(data / "templates", f"sqlite:///{db_file}")
    gc.register_database(data / "templates", f"sqlite:///{db_file}")  # idempotent
    gc.register_database(data / "templates", f"sqlite:///{tmp_path / 'gone.db'}")

    registered = gc.registered_databases(data / "templates")

    assert set(registered) == {f"sqlite:///{db_file}", f"sqlite:///{tmp_path / 'gone.db'}"}
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in registered.values())
    assert gc.database_references(f"sqlite:///{db_file}") == {"/x/layers/k/fs"}
    assert gc.database_references(f"sqlite:///{tmp_path / 'gone.db'}") is None
    assert not (tmp_path / "gone.db").exists()  # reading never creates a database
    (tmp_path / "broken.db").write_text("not a database")
    with pytest.raises(gc.ReferencesUnknown):
        gc.database_references(f"sqlite:///{tmp_path / 'broken.db'}")
    (data / "templates" / gc.DATABASES_DIR / "damaged.json").write_text("{")
    with pytest.raises(gc.ReferencesUnknown):
        gc.registered_databases(data / "templates")


def test_cli_dry_run_confirmation_and_unreadable_references(data: Path) -> None:
    keep, drop = _layer(data, "a"), _layer(data, "b")
    url = f"sqlite:///{data / 'sandlot.db'}"
    _json(data / "runtime" / "x" / "sandboxes" / "s" / "runtime.json", {"layers": [str(keep)]})
    env = {"SANDLOT_DATA_DIR": str(data), "SANDLOT_DATABASE_URL": url}
    runner = CliRunner()

    dry = runner.invoke(app, ["template", "gc", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert drop.parent.name in dry.output and keep.parent.name not in dry.output and "1 entries" in dry.output
    assert drop.is_dir()
    refused = runner.invoke(app, ["template", "gc"], env=env, input="n\n")
    assert refused.exit_code == 1 and drop.is_dir()

    done = runner.invoke(app, ["template", "gc", "--yes"], env=env)
    assert done.exit_code == 0, done.output
    assert "Deleted 1 entries" in done.output and not drop.exists() and keep.is_dir()

    (data / "runtime" / "x" / "sandboxes" / "s" / "runtime.json").write_text("{not json")
    blocked = runner.invoke(app, ["template", "gc", "--yes", "--min-age", "0"], env=env)
    assert blocked.exit_code == 1 and keep.is_dir()
