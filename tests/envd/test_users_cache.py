"""The parsed /etc/passwd and /etc/group are reused between requests but never go stale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandlot.envd import users


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    group.write_text("root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n")
    old = os.path.getmtime(passwd) - 10  # settled files: the cache may keep them
    for p in (passwd, group):
        os.utime(p, (old, old))
    monkeypatch.setattr(users, "PASSWD_PATH", str(passwd))
    monkeypatch.setattr(users, "GROUP_PATH", str(group))
    return passwd, group


def test_lookup_reads_users_and_groups(files: tuple[Path, Path]) -> None:
    u = users.lookup("alice")
    assert (u.uid, u.gid, u.home, u.groups) == (1000, 1000, "/home/alice", (50, 1000))
    assert users.lookup("alice") == u  # second call served from the parsed copy
    with pytest.raises(users.UnknownUser):
        users.lookup("bob")


def test_same_size_rewrite_in_place_is_seen(files: tuple[Path, Path]) -> None:
    passwd, _ = files
    assert users.lookup("alice").uid == 1000
    # same length, same inode, written right away: ctime moves, and a fresh file is never cached
    passwd.write_text(passwd.read_text().replace("1000:1000", "1001:1000"))
    assert users.lookup("alice").uid == 1001
    passwd.write_text(passwd.read_text().replace("1001:1000", "1002:1000"))
    assert users.lookup("alice").uid == 1002


def test_renamed_in_file_and_new_group_are_seen(files: tuple[Path, Path]) -> None:
    passwd, group = files
    assert users.lookup("alice").groups == (50, 1000)
    new = passwd.with_name("passwd+")
    new.write_text(passwd.read_text() + "bob:x:1001:1001::/home/bob:/bin/sh\n")
    os.utime(new, (1, 1))  # even with an old mtime (useradd-style rename), the inode differs
    os.rename(new, passwd)
    assert users.lookup("bob").shell == "/bin/sh"
    group.write_text(group.read_text() + "docker:x:999:alice\n")
    assert users.lookup("alice").groups == (50, 999, 1000)


def test_missing_files_mean_no_users(files: tuple[Path, Path]) -> None:
    passwd, _ = files
    assert users.lookup("alice").uid == 1000
    passwd.unlink()
    with pytest.raises(users.UnknownUser):
        users.lookup("alice")
