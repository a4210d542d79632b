"""Directory watchers on inotify: one inotify fd per watcher, read from the asyncio loop.

Used by both WatchDir (stream) and CreateWatcher/GetWatcherEvents (polling). Events are kept in
a bounded buffer; when it is full the fd is no longer read, so the kernel queue (and its
IN_Q_OVERFLOW) bounds memory instead of envd.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_mod
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import inotify

MAX_BUFFERED = 16384

CREATE, WRITE, REMOVE, RENAME, CHMOD = "create", "write", "remove", "rename", "chmod"

# statfs f_type magic numbers of network / FUSE filesystems (rejected unless allowed).
NETWORK_FS_MAGIC = {0x6969: "nfs", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x517B: "smb",
                    0x65735546: "fuse", 0x564C: "ncp", 0x73757245: "coda", 0x01021997: "v9fs"}


@dataclass(frozen=True)
class Event:
    name: str  # relative to the watched directory
    kind: str
    path: str  # absolute
    entry: Any = None  # EntryInfo taken when the event was read (include_entry)


def _kinds(mask: int) -> list[str]:
    """fsnotify's mapping of inotify masks to ops (one raw event may carry several)."""
    out = []
    if mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
        out.append(CREATE)
    if mask & (inotify.IN_DELETE | inotify.IN_DELETE_SELF):
        out.append(REMOVE)
    if mask & inotify.IN_MODIFY:
        out.append(WRITE)
    if mask & (inotify.IN_MOVED_FROM | inotify.IN_MOVE_SELF):
        out.append(RENAME)
    if mask & inotify.IN_ATTRIB:
        out.append(CHMOD)
    return out


def network_fs(path: str) -> str | None:
    """Name of the network filesystem ``path`` lives on, else None (statfs via ctypes)."""
    import ctypes

    buf = (ctypes.c_long * 32)()  # struct statfs is < 256 bytes; f_type is the first word
    if inotify.libc().statfs(os.fsencode(path), buf) != 0:
        return None
    return NETWORK_FS_MAGIC.get(buf[0] & 0xFFFFFFFF)


class Watcher:
    def __init__(self, root: str, recursive: bool, entry_fn: Callable[[str], Any] | None = None) -> None:
        """``entry_fn(path)`` (include_entry) runs as events are read, while the path likely exists."""
        self.root = root
        self.recursive = recursive
        self._entry_fn = entry_fn
        self.events: deque[Event] = deque()
        self.changed = asyncio.Event()
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._dirs: dict[int, str] = {}  # wd -> absolute dir
        self._reading = False
        self._fd = inotify.init()
        try:
            self._add(root, emit=False)
        except OSError:
            os.close(self._fd)
            raise
        self._resume()

    # ---- watches --------------------------------------------------------------------------
    def _add(self, path: str, emit: bool) -> None:
        """Watch ``path`` (and, if recursive, its subdirectories).

        ``emit`` reports entries already present in a directory that appeared after the watch
        started: they may have been created before we could add the watch.
        """
        stack = [path]
        while stack:
            d = stack.pop()
            try:
                wd = inotify.add_watch(self._fd, d)
            except OSError:
                if d == self.root:
                    raise
                continue
            self._dirs[wd] = d
            if not self.recursive:
                continue
            try:
                with os.scandir(d) as it:
                    children = list(it)
            except OSError:
                continue
            for child in children:
                if emit:
                    self._push(child.path, CREATE)
                try:
                    if child.is_dir(follow_symlinks=False):
                        stack.append(child.path)
                except OSError:
                    pass

    # ---- reading --------------------------------------------------------------------------
    def _resume(self) -> None:
        if not self._reading and not self.closed:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        for ev in inotify.read_events(self._fd):
            if ev.mask & inotify.IN_IGNORED:
                self._dirs.pop(ev.wd, None)
                continue
            if ev.mask & inotify.IN_Q_OVERFLOW:
                continue
            d = self._dirs.get(ev.wd)
            if d is None:
                continue
            path = os.path.join(d, ev.name) if ev.name else d
            if ev.name == "" and d != self.root:
                continue  # *_SELF of a subdirectory: its parent already reported it
            for kind in _kinds(ev.mask):
                self._push(path, kind)
            if (self.recursive and ev.mask & inotify.IN_ISDIR
                    and ev.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO)):
                self._add(path, emit=True)
        if len(self.events) >= MAX_BUFFERED:
            self._pause()

    def _push(self, path: str, kind: str) -> None:
        name = os.path.relpath(path, self.root) if path != self.root else ""
        entry = None
        if self._entry_fn is not None and kind != REMOVE:
            try:
                entry = self._entry_fn(path)
            except OSError:
                pass
        self.events.append(Event(name, kind, path, entry))
        self.changed.set()

    # ---- consumers ------------------------------------------------------------------------
    def drain(self) -> list[Event]:
        out = list(self.events)
        self.events.clear()
        self.changed.clear()
        self._resume()
        return out

    async def wait(self, timeout: float | None) -> bool:
        """True when events are available, False on timeout."""
        if self.events:
            return True
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._pause()
        self.closed = True
        os.close(self._fd)
        self.changed.set()


def is_dir(path: str) -> bool | None:
    """True/False for an existing path (following symlinks, like envd), None when missing."""
    try:
        return stat_mod.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


class WatcherRegistry:
    """Polling watchers by id (CreateWatcher / GetWatcherEvents / RemoveWatcher)."""

    def __init__(self) -> None:
        self.watchers: dict[str, Watcher] = {}

    def add(self, watcher: Watcher) -> str:
        wid = str(uuid.uuid4())
        self.watchers[wid] = watcher
        return wid

    def get(self, wid: str) -> Watcher | None:
        return self.watchers.get(wid)

    def remove(self, wid: str) -> Watcher | None:
        w = self.watchers.pop(wid, None)
        if w is not None:
            w.close()
        return w
