"""``filesystem.Filesystem`` Connect service: Stat, ListDir, MakeDir, Remove, Move and watchers."""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal

from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from sandlot.protocol.gen.filesystem import filesystem_pb as pb
from sandlot.protocol.gen.filesystem.filesystem_connect import Filesystem

from . import users, xattrs
from .watchers import CHMOD, CREATE, REMOVE, RENAME, WRITE, Event, Watcher, WatcherRegistry, is_dir, network_fs
from .rpc_common import error, keepalive_interval, request_user, resolve_path
from .state import EnvdState

if TYPE_CHECKING:
    # One type per oneof arm, for annotating the values we build: a bare ``Oneof("start", x)``
    # is inferred ``Oneof[str, ...]``, which matches none of a field's ``Literal`` arms.
    _Start = Oneof[Literal["start"], pb.WatchDirResponse.StartEvent]
    _KeepAlive = Oneof[Literal["keepalive"], pb.WatchDirResponse.KeepAlive]
    _Filesystem = Oneof[Literal["filesystem"], pb.FilesystemEvent]


def _file_type(mode: int) -> pb.FileType:
    if stat_mod.S_ISDIR(mode):
        return pb.FileType.DIRECTORY
    if stat_mod.S_ISREG(mode):
        return pb.FileType.FILE
    return pb.FileType.UNSPECIFIED


def entry_info(path: str) -> pb.EntryInfo:
    """EntryInfo for ``path`` itself (lstat); symlinks report their target's type."""
    st = os.lstat(path)
    is_link = stat_mod.S_ISLNK(st.st_mode)
    target: str | None = None
    ftype = _file_type(st.st_mode)
    if is_link:
        target = os.readlink(path)
        try:
            ftype = _file_type(os.stat(path).st_mode)
        except OSError:
            ftype = pb.FileType.FILE  # dangling link: still a listable entry
        target = os.path.normpath(os.path.join(os.path.dirname(path), target))
    mtime_ns = st.st_mtime_ns
    return pb.EntryInfo(
        name=os.path.basename(path) or path,
        type=ftype,
        path=path,
        size=st.st_size,
        mode=stat_mod.S_IMODE(st.st_mode),
        permissions=stat_mod.filemode(st.st_mode),
        owner=users.owner_name(st.st_uid),
        group=users.group_name(st.st_gid),
        modified_time=Timestamp(seconds=mtime_ns // 1_000_000_000, nanos=mtime_ns % 1_000_000_000),
        symlink_target=target,
        metadata=xattrs.read(path) if not is_link else {},
        is_symlink=is_link,
    )


EVENT_TYPES = {CREATE: pb.EventType.CREATE, WRITE: pb.EventType.WRITE, REMOVE: pb.EventType.REMOVE,
               RENAME: pb.EventType.RENAME, CHMOD: pb.EventType.CHMOD}


def fs_event(ev: Event) -> pb.FilesystemEvent:
    return pb.FilesystemEvent(name=ev.name, type=EVENT_TYPES[ev.kind], entry=ev.entry)


def _os_error(e: OSError, path: str) -> ConnectError:
    if e.errno == errno.ENOENT:
        return error("not_found", f"path '{path}' does not exist")
    if e.errno in (errno.EACCES, errno.EPERM):
        return error("permission_denied", f"permission denied for '{path}': {e.strerror}")
    if e.errno == errno.EEXIST:
        return error("already_exists", f"path '{path}' already exists")
    if e.errno in (errno.ENOTDIR, errno.EISDIR, errno.EINVAL):
        return error("invalid_argument", f"invalid path '{path}': {e.strerror}")
    return error("internal", f"error on '{path}': {e.strerror}")


def make_dirs_owned(path: str, user: users.User) -> None:
    """mkdir -p where every directory created is owned by ``user``."""
    missing = []
    cur = path
    while not os.path.exists(cur):
        missing.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        users.chown_to(d, user)


def remove_tree(path: str) -> None:
    """``rm -rf`` of a directory without recursion: a tenant's tree can nest deeper than
    Python's recursion limit (``shutil.rmtree`` recurses before 3.12) and than PATH_MAX, so
    each level is reached through its parent's descriptor. Symlinks are removed, not followed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    stack: list[tuple[int, str]] = [(os.open(path, flags), "")]   # (directory fd, its name in the parent)
    try:
        while stack:
            fd, name = stack[-1]
            child: tuple[int, str] | None = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = (os.open(entry.name, flags, dir_fd=fd), entry.name)
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:
                stack.append(child)
                continue
            stack.pop()
            os.close(fd)
            if stack:
                os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack:
            os.close(fd)
    os.rmdir(path)


def _sorted_names(directory: str) -> list[str]:
    """Names in ``directory`` in Go's ``os.ReadDir`` order: by their bytes."""
    return sorted(os.listdir(directory), key=os.fsencode)


def _walk(root: str, names: list[str], depth: int, out: list[pb.EntryInfo]) -> None:
    """Depth-first, lexical, each directory followed by its own children: the order of envd's
    ``filepath.WalkDir``, which the SDK hands to the user unchanged. A symlinked root is
    followed once (as ``ls dir/`` would); nothing below it is. Unreadable subdirectories
    are listed but not entered (envd fails the whole call there; a partial tree is more useful).
    An explicit stack: a tenant's tree can nest deeper than Python's recursion limit."""
    stack: list[tuple[str, Iterator[str], int]] = [(root, iter(names), 1)]
    while stack:
        directory, pending, level = stack[-1]
        name = next(pending, None)
        if name is None:
            stack.pop()
            continue
        child = os.path.join(directory, name)
        try:
            info = entry_info(child)
        except OSError:
            continue
        out.append(info)
        if level < depth and info.type == pb.FileType.DIRECTORY and not info.is_symlink:
            try:
                below = _sorted_names(child)
            except OSError:
                continue
            stack.append((child, iter(below), level + 1))


class FilesystemService(Filesystem):
    def __init__(self, state: EnvdState) -> None:
        self.state = state
        self.watchers = WatcherRegistry()

    def _path(self, raw: str, ctx: RequestContext[Any, Any]) -> tuple[str, users.User]:
        user = request_user(self.state, ctx)
        return resolve_path(raw, user, self.state.default_cwd(user)), user

    async def stat(self, request: pb.StatRequest,
                   ctx: RequestContext[pb.StatRequest, pb.StatResponse]) -> pb.StatResponse:
        path, _ = self._path(request.path, ctx)
        try:
            return pb.StatResponse(entry=entry_info(path))
        except OSError as e:
            raise _os_error(e, path) from None

    async def list_dir(self, request: pb.ListDirRequest,
                       ctx: RequestContext[pb.ListDirRequest, pb.ListDirResponse]) -> pb.ListDirResponse:
        path, _ = self._path(request.path, ctx)
        depth = max(request.depth or 1, 1)
        try:
            st = os.stat(path)
        except OSError as e:
            raise _os_error(e, path) from None
        if not stat_mod.S_ISDIR(st.st_mode):
            raise error("invalid_argument", f"path '{path}' is not a directory")
        entries: list[pb.EntryInfo] = []
        try:
            names = _sorted_names(path)
        except OSError as e:
            raise _os_error(e, path) from None
        _walk(path, names, depth, entries)
        return pb.ListDirResponse(entries=entries)

    async def make_dir(self, request: pb.MakeDirRequest,
                       ctx: RequestContext[pb.MakeDirRequest, pb.MakeDirResponse]) -> pb.MakeDirResponse:
        path, user = self._path(request.path, ctx)
        if os.path.lexists(path):
            if os.path.isdir(path):
                raise error("already_exists", f"directory '{path}' already exists")
            raise error("invalid_argument", f"path '{path}' already exists and is not a directory")
        try:
            make_dirs_owned(path, user)
            return pb.MakeDirResponse(entry=entry_info(path))
        except OSError as e:
            raise _os_error(e, path) from None

    async def remove(self, request: pb.RemoveRequest,
                     ctx: RequestContext[pb.RemoveRequest, pb.RemoveResponse]) -> pb.RemoveResponse:
        path, _ = self._path(request.path, ctx)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _os_error(e, path) from None
        return pb.RemoveResponse()

    async def move(self, request: pb.MoveRequest,
                   ctx: RequestContext[pb.MoveRequest, pb.MoveResponse]) -> pb.MoveResponse:
        user = request_user(self.state, ctx)
        default = self.state.default_cwd(user)
        src = resolve_path(request.source, user, default)
        dst = resolve_path(request.destination, user, default)
        if not os.path.lexists(src):
            raise error("not_found", f"source path '{src}' does not exist")
        try:
            make_dirs_owned(os.path.dirname(dst), user)
            os.rename(src, dst)
            return pb.MoveResponse(entry=entry_info(dst))
        except OSError as e:
            raise _os_error(e, dst) from None

    # ---- watchers -------------------------------------------------------------------------
    def _watcher(self, raw: str, recursive: bool, include_entry: bool, allow_network: bool,
                 ctx: RequestContext[Any, Any]) -> Watcher:
        path, _ = self._path(raw, ctx)
        kind = is_dir(path)
        if kind is None:
            raise error("not_found", f"path {path} not found")
        if not kind:
            raise error("invalid_argument", f"path {path} not a directory")
        if not allow_network:
            fs = network_fs(path)
            if fs is not None:
                raise error("failed_precondition", f"cannot watch path on network filesystem ({fs}): {path}")
        try:
            return Watcher(path, recursive, entry_info if include_entry else None)
        except OSError as e:
            raise _os_error(e, path) from None

    async def watch_dir(self, request: pb.WatchDirRequest,
                        ctx: RequestContext[pb.WatchDirRequest, pb.WatchDirResponse]) -> AsyncIterator[pb.WatchDirResponse]:
        w = self._watcher(request.path, request.recursive, request.include_entry, request.allow_network_mounts, ctx)
        interval = keepalive_interval(ctx)
        timeout_ms = ctx.timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms is not None else None
        try:
            start: _Start = Oneof("start", pb.WatchDirResponse.StartEvent())
            yield pb.WatchDirResponse(event=start)
            while True:
                wait = interval if deadline is None else min(interval, max(deadline - time.monotonic(), 0))
                if not await w.wait(wait):
                    if deadline is not None and time.monotonic() >= deadline:
                        raise error("deadline_exceeded", "watch stream deadline exceeded")
                    keepalive: _KeepAlive = Oneof("keepalive", pb.WatchDirResponse.KeepAlive())
                    yield pb.WatchDirResponse(event=keepalive)
                    continue
                for ev in w.drain():
                    changed: _Filesystem = Oneof("filesystem", fs_event(ev))
                    yield pb.WatchDirResponse(event=changed)
        finally:
            w.close()

    async def create_watcher(self, request: pb.CreateWatcherRequest,
                             ctx: RequestContext[pb.CreateWatcherRequest, pb.CreateWatcherResponse]) -> pb.CreateWatcherResponse:
        w = self._watcher(request.path, request.recursive, request.include_entry, request.allow_network_mounts, ctx)
        return pb.CreateWatcherResponse(watcher_id=self.watchers.add(w))

    async def get_watcher_events(self, request: pb.GetWatcherEventsRequest,
                                 ctx: RequestContext[pb.GetWatcherEventsRequest, pb.GetWatcherEventsResponse]) -> pb.GetWatcherEventsResponse:
        w = self.watchers.get(request.watcher_id)
        if w is None:
            raise error("not_found", f"watcher with id {request.watcher_id} not found")
        return pb.GetWatcherEventsResponse(events=[fs_event(ev) for ev in w.drain()])

    async def remove_watcher(self, request: pb.RemoveWatcherRequest,
                             ctx: RequestContext[pb.RemoveWatcherRequest, pb.RemoveWatcherResponse]) -> pb.RemoveWatcherResponse:
        if self.watchers.remove(request.watcher_id) is None:
            raise error("not_found", f"watcher with id {request.watcher_id} not found")
        return pb.RemoveWatcherResponse()
