"""Minimal inotify(7) binding via ctypes: the os module has none, and a dep is not worth it."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK

# The same set fsnotify (Go envd) subscribes to.
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)

_HEADER = struct.Struct("iIII")
_libc: ctypes.CDLL | None = None


class RawEvent(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str


def libc() -> ctypes.CDLL:
    """The C library (loaded once), also for envd's other raw syscalls (``watchers.network_fs``)."""
    return _lib()


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def init() -> int:
    """A fresh non-blocking, close-on-exec inotify fd."""
    return _check(_lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC))


def add_watch(fd: int, path: str, mask: int = WATCH_MASK) -> int:
    return _check(_lib().inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(mask)))


def rm_watch(fd: int, wd: int) -> None:
    _lib().inotify_rm_watch(fd, wd)  # EINVAL for an already-gone wd is fine


def read_events(fd: int) -> Iterator[RawEvent]:
    """Drain what is readable now (the fd is non-blocking)."""
    while True:
        try:
            buf = os.read(fd, 64 * 1024)
        except BlockingIOError:
            return
        if not buf:
            return
        off = 0
        while off + _HEADER.size <= len(buf):
            wd, mask, cookie, length = _HEADER.unpack_from(buf, off)
            off += _HEADER.size
            raw = buf[off:off + length].split(b"\0", 1)[0]
            off += length
            yield RawEvent(wd, mask, cookie, os.fsdecode(raw))
