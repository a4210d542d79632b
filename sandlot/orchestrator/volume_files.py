"""The volume-content API's file operations, on a volume's tenant tree.

Sandboxes write whatever they like into a volume — symlinks to ``/etc/passwd``, ``..``
chains, absolute links, device-free but hostile names — so every operation here goes
through :mod:`sandlot.tenant_fs`: a lookup is one ``openat2`` with ``RESOLVE_IN_ROOT``
under the volume's ``data`` dir (a symlink resolves as the sandbox would see it, never
above the volume's root), a write replaces the final name instead of following it, and
removal and listing work on directory fds with single names that are never followed.

Ids: the API speaks sandbox-side uids/gids; on disk they are the user namespace's host ids
(``IdRange``), so a file the API chowns to 1000 is uid 1000 inside every sandbox.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

from sandlot import tenant_fs
from sandlot.orchestrator.errors import Conflict, InsufficientStorage, InvalidRequest, SandboxError
from sandlot.runtime.idmap import IdRange

DEFAULT_ID = 9090
"""E2B's default owner of what the content API creates."""
FILE_MODE = 0o666
DIR_MODE = 0o777
MAX_DEPTH = 10
MAX_ENTRIES = 100_000
"""A listing stops here (a tenant can make millions of names; the answer stays bounded)."""
CHUNK = 1 << 20


class PathNotFound(SandboxError):
    """No such file or directory in the volume (404)."""


@dataclass(frozen=True)
class Ids:
    """Sandbox-side ids ↔ host ids of the volume's files."""

    userns: IdRange | None

    def to_host(self, inside: int) -> int:
        if not 0 <= inside < (self.userns.size if self.userns else 2**32 - 1):
            raise InvalidRequest(f"uid/gid {inside} is outside the sandboxes' id range")
        return self.userns.to_host(inside) if self.userns else inside

    def to_inside(self, host: int) -> int:
        if self.userns is None:
            return host
        inside = self.userns.to_inside(host)
        return 65534 if inside is None else inside


def parts(path: str) -> list[str]:
    """A content-API path as components (absolute or not: both mean from the volume's root)."""
    if "\0" in path:
        raise InvalidRequest("NUL in a path")
    out = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in out:
        raise InvalidRequest(f"'..' in a volume path: {path[:200]!r}")
    if len(out) > tenant_fs.MAX_DEPTH:
        raise InvalidRequest("the path is too deep")
    return out


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "unknown"


class VolumeTree:
    """One volume's ``data`` dir, opened by fd; every call stays inside it."""

    def __init__(self, root: os.PathLike[str] | str, ids: Ids) -> None:
        self.tree = tenant_fs.Tree(root)
        self.ids = ids

    def close(self) -> None:
        self.tree.close()

    def __enter__(self) -> "VolumeTree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stat --

    def entry(self, names: list[str], st: os.stat_result, target: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": names[-1] if names else "/", "path": "/" + "/".join(names), "type": _kind(st.st_mode),
            "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
            "uid": self.ids.to_inside(st.st_uid), "gid": self.ids.to_inside(st.st_gid),
            "atime": _rfc3339(st.st_atime), "mtime": _rfc3339(st.st_mtime), "ctime": _rfc3339(st.st_ctime),
        }
        if target is not None:
            data["target"] = target
        return data

    def _lstat(self, names: list[str]) -> os.stat_result:
        try:
            if not names:
                return os.stat(self.tree.fd)
            return self.tree.lstat("/".join(names))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(f"Path /{'/'.join(names)} not found") from None
        except OSError as exc:
            raise _refused(names, exc) from None

    def _parent_fd(self, names: list[str]) -> int:
        """A readable fd of the parent dir (resolved inside the tree; 404 if there is none)."""
        try:
            return self.tree.open("/".join(names[:-1]), os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(f"Path /{'/'.join(names[:-1])} not found") from None
        except OSError as exc:
            raise _refused(names, exc) from None

    def _described(self, names: list[str]) -> dict[str, Any]:
        st = self._lstat(names)
        target = None
        if stat.S_ISLNK(st.st_mode):
            fd = self._parent_fd(names)
            try:
                target = os.readlink(names[-1], dir_fd=fd)
            finally:
                os.close(fd)
        return self.entry(names, st, target)

    def stat(self, path: str) -> dict[str, Any]:
        return self._described(parts(path))

    # -- reading --

    def open_file(self, path: str) -> tuple[int, int]:
        """(fd, size) of a regular file; a symlink is followed inside the volume, as in a sandbox."""
        names = parts(path)
        try:
            fd = self.tree.open("/".join(names), os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(f"Path {'/' + '/'.join(names)} not found") from None
        except OSError as exc:
            raise _refused(names, exc) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise InvalidRequest(f"Path /{'/'.join(names)} is not a file")
        return fd, st.st_size

    def list_dir(self, path: str, depth: int) -> list[dict[str, Any]]:
        """Entries below ``path`` to ``depth`` levels, depth-first in lexical order (Go's
        ``WalkDir``); symlinks are listed, never descended."""
        if not 1 <= depth <= MAX_DEPTH:
            raise InvalidRequest(f"depth must be between 1 and {MAX_DEPTH}")
        names = parts(path)
        try:
            fd = self.tree.open("/".join(names), os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise PathNotFound(f"Path /{'/'.join(names)} not found") from None
        except NotADirectoryError:
            raise InvalidRequest(f"Path /{'/'.join(names)} is not a directory") from None
        except OSError as exc:
            raise _refused(names, exc) from None
        out: list[dict[str, Any]] = []
        self._walk(fd, names, depth, out)
        return out

    def _walk(self, dirfd: int, names: list[str], depth: int, out: list[dict[str, Any]]) -> None:
        try:
            dev = os.fstat(dirfd).st_dev
            with os.scandir(dirfd) as it:
                children = sorted(e.name for e in it)
            for name in children:
                if len(out) >= MAX_ENTRIES:
                    return
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                target = os.readlink(name, dir_fd=dirfd) if stat.S_ISLNK(st.st_mode) else None
                out.append(self.entry([*names, name], st, target))
                if depth > 1 and stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                    try:
                        child = tenant_fs.openat2(dirfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                                  resolve=tenant_fs.LITERAL)
                    except OSError:
                        continue   # swapped for something else meanwhile
                    self._walk(child, [*names, name], depth - 1, out)
        finally:
            os.close(dirfd)

    # -- writing --

    def write_file(self, path: str, data: IO[bytes], *, uid: int | None, gid: int | None, mode: int | None,
                   force: bool) -> dict[str, Any]:
        """E2B's ``PUT …/file``: with ``force`` parents are made and an existing file replaced;
        without, the parent must exist and the name must be free (409). The final name is
        replaced, never written through (a planted symlink is swapped for the file)."""
        names = parts(path)
        if not names:
            raise InvalidRequest("cannot write the volume's root")
        if not force:
            os.close(self._parent_fd(names))
            if self._exists(names):
                raise Conflict(f"Path /{'/'.join(names)} already exists")
        host_uid = self.ids.to_host(DEFAULT_ID if uid is None else uid)
        host_gid = self.ids.to_host(DEFAULT_ID if gid is None else gid)
        try:
            if force:
                self._make_parents(names, host_uid, host_gid)
            self.tree.write_file("/".join(names), data, FILE_MODE if mode is None else mode & 0o7777,
                                 host_uid, host_gid)
        except tenant_fs.TreeError as exc:
            raise InvalidRequest(str(exc)) from None
        except OSError as exc:
            raise _refused(names, exc) from None
        return self._described(names)

    def make_dir(self, path: str, *, uid: int | None, gid: int | None, mode: int | None,
                 force: bool) -> dict[str, Any]:
        names = parts(path)
        if not names:
            raise Conflict("Path / already exists")
        host_uid = self.ids.to_host(DEFAULT_ID if uid is None else uid)
        host_gid = self.ids.to_host(DEFAULT_ID if gid is None else gid)
        exists = self._exists(names)
        if exists and not force:
            raise Conflict(f"Path /{'/'.join(names)} already exists")
        if not force:
            os.close(self._parent_fd(names))
        try:
            if exists:
                if not stat.S_ISDIR(self._lstat(names).st_mode):
                    raise Conflict(f"Path /{'/'.join(names)} exists and is not a directory")
            else:
                if force:
                    self._make_parents(names, host_uid, host_gid)
                self.tree.mkdir("/".join(names), DIR_MODE if mode is None else mode & 0o7777, host_uid, host_gid)
        except tenant_fs.TreeError as exc:
            raise InvalidRequest(str(exc)) from None
        except OSError as exc:
            raise _refused(names, exc) from None
        return self._described(names)

    def update(self, path: str, *, uid: int | None, gid: int | None, mode: int | None) -> dict[str, Any]:
        """Owner and mode of the entry itself (a symlink is ``lchown``-ed, never chmod-ed through)."""
        names = parts(path)
        self._lstat(names)
        host_uid = None if uid is None else self.ids.to_host(uid)
        host_gid = None if gid is None else self.ids.to_host(gid)
        try:
            if names:
                self.tree.set_attrs("/".join(names), None if mode is None else mode & 0o7777, host_uid, host_gid)
            else:
                fd = self.tree.open("", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    if host_uid is not None or host_gid is not None:
                        os.fchown(fd, -1 if host_uid is None else host_uid, -1 if host_gid is None else host_gid)
                    if mode is not None:
                        os.fchmod(fd, mode & 0o7777)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise _refused(names, exc) from None
        return self._described(names)

    def remove(self, path: str) -> None:
        """Recursive, by dir fd and single never-followed names (``shutil.rmtree``'s fd walk)."""
        names = parts(path)
        if not names:
            raise InvalidRequest("cannot remove the volume's root")
        parent = self._parent_fd(names)
        try:
            try:
                st = os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise PathNotFound(f"Path /{'/'.join(names)} not found") from None
            if stat.S_ISDIR(st.st_mode):
                try:
                    shutil.rmtree(names[-1], dir_fd=parent)
                except RecursionError:   # a tree thousands of directories deep
                    raise InvalidRequest(f"/{'/'.join(names)} is too deep to remove in one call: "
                                         "remove its subdirectories first") from None
            else:
                os.unlink(names[-1], dir_fd=parent)
        except OSError as exc:
            raise _refused(names, exc) from None
        finally:
            os.close(parent)

    def _make_parents(self, names: list[str], host_uid: int, host_gid: int) -> None:
        """Missing parents of ``names`` as directories the content API would make (owner, 0777)."""
        for i in range(1, len(names)):
            if not self._exists(names[:i]):
                self.tree.mkdir("/".join(names[:i]), DIR_MODE, host_uid, host_gid)

    def _exists(self, names: list[str]) -> bool:
        try:
            self._lstat(names)
            return True
        except PathNotFound:
            return False


def _refused(names: list[str], exc: OSError) -> SandboxError:
    where = "/" + "/".join(names)
    if exc.errno == errno.ENOSPC:
        return InsufficientStorage(f"The volume is full: writing {where} failed (no space left on the volume)")
    if exc.errno in (errno.EXDEV, errno.ELOOP):
        return InvalidRequest(f"{where} cannot be resolved inside the volume (a symlink loop or escape)")
    if exc.errno in (errno.EACCES, errno.EPERM):   # e.g. a device node a sandbox made (the mount is nodev)
        return InvalidRequest(f"{where}: permission denied")
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
        return Conflict(f"{where}: {os.strerror(exc.errno)}")
    if exc.errno == errno.ENOENT:
        return PathNotFound(f"Path {where} not found")
    return SandboxError(f"{where}: {os.strerror(exc.errno or 0)}")


def read_chunks(fd: int) -> Iterator[bytes]:
    """The file's bytes to EOF, then the fd is closed."""
    try:
        while chunk := os.read(fd, CHUNK):
            yield chunk
    finally:
        os.close(fd)
