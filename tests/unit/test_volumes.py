"""Volume rules that need no server: mount paths, content-API paths, ids, and volume tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandlot.orchestrator import volume_files
from sandlot.orchestrator.errors import InvalidRequest
from sandlot.orchestrator.volumes import VolumeNotFound, Volumes, VolumeTokenInvalid, check_mount_path
from sandlot.settings import Settings
from sandlot.store import volumes as volume_store
from sandlot.store.database import Database
from sandlot.store.keys import create_team


@pytest.mark.parametrize("path", ["/data", "/mnt/shared", "/home/user/v", "/a-b_c.d"])
def test_good_mount_paths(path: str) -> None:
    assert check_mount_path(path) is None


@pytest.mark.parametrize("path", ["", "data", "/", "/a/../b", "/a/./b", "//a", "/a/", "/proc", "/proc/x", "/sys/fs",
                                  "/dev/shm", "/.sandlot", "/.sandlot/x", "/etc/hosts", "/x\0y", "/" + "a" * 2000])
def test_bad_mount_paths(path: str) -> None:
    assert check_mount_path(path) is not None


def test_content_paths_never_climb() -> None:
    assert volume_files.parts("/a/b/./c") == ["a", "b", "c"]
    assert volume_files.parts("a//b/") == ["a", "b"]
    assert volume_files.parts("/") == []
    for bad in ("..", "/a/../../etc", "a/..", "x\0"):
        with pytest.raises(InvalidRequest):
            volume_files.parts(bad)


def test_ids_are_uuids_only() -> None:
    assert volume_store.valid_id("0f8fad5b-d9cb-469f-a165-70867728950e")
    for bad in ("", "..", "../x", "0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950e/..",
                "0f8fad5b d9cb 469f a165 70867728950e"):
        assert not volume_store.valid_id(bad)


def test_tokens_open_their_own_volume_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    db = Database(settings.effective_database_url)
    db.migrate()
    volumes = Volumes(settings, db, lambda: None)
    with db.session() as session, session.begin():
        team, other = create_team(session, "a").id, create_team(session, "b").id
        mine = volume_store.create(session, team, "data", 16, 10)
        theirs = volume_store.create(session, other, "data", 16, 10)
        session.expunge_all()
    token = volumes.token(mine)
    assert volumes.authorize(token, mine.id).id == mine.id
    with pytest.raises(VolumeNotFound):   # a token names one volume
        volumes.authorize(token, theirs.id)
    body, sig = token.rsplit(".", 1)
    for forged in (None, "", "e2b_" + "0" * 40, body + "." + sig[::-1], token.replace("sl_vol1.", "sl_vol1.x")):
        with pytest.raises(VolumeTokenInvalid):
            volumes.authorize(forged, mine.id)
    settings.volume_token_ttl_s = -1
    with pytest.raises(VolumeTokenInvalid, match="expired"):
        volumes.authorize(volumes.token(mine), mine.id)
    settings.volume_token_ttl_s = 3600
    with db.session() as session, session.begin():
        volume_store.delete(session, session.get(type(mine), mine.id))
    with pytest.raises(VolumeNotFound):   # a deleted volume's tokens open nothing
        volumes.authorize(token, mine.id)
