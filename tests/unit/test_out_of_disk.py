"""A full disk behind an unexpected error is a 507, not an anonymous 500 (found by bench/soak.py)."""

import errno
import sqlite3

import sqlalchemy.exc

from sandlot.runtime.disk import out_of_space as _out_of_disk


def test_sqlite_full_and_enospc_are_out_of_disk() -> None:
    full = sqlalchemy.exc.OperationalError("UPDATE sandboxes …", {}, sqlite3.OperationalError("database or disk is full"))
    assert _out_of_disk(full)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as wrapped:
        assert _out_of_disk(wrapped)


def test_other_errors_are_not() -> None:
    assert not _out_of_disk(sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")))
    assert not _out_of_disk(OSError(errno.EACCES, "Permission denied"))
    assert not _out_of_disk(ValueError("boom"))
