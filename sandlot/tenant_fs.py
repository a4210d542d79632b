"""The one way the host touches a tree a tenant can shape.

Archives, build contexts, build layers, a sandbox's upper dir and snapshot copies are
all written by someone we don't trust: any name in them may be a symlink (to
``/etc/shadow``, to ``/proc/self/root``, to ``..``), a hard link, a device node, or be
swapped for one between our check and our use. Path strings and ``realpath`` checks
cannot be made safe against that, so host code never passes a joined path string into
such a tree. Instead a :class:`Tree` holds a file descriptor of the tree's root and every
lookup is one ``openat2(2)`` with

* ``RESOLVE_IN_ROOT`` — symlinks are resolved as the sandbox would see them, with the
  tree as ``/``: an absolute link or ``..`` climbs to the tree root and no further;
* ``RESOLVE_NO_MAGICLINKS`` — ``/proc/<pid>/root``-style links are refused;
* ``RESOLVE_NO_XDEV`` — a lookup never crosses into another mount.

The final component of anything the host *writes* is never followed: files are written to
a fresh name (``O_CREAT|O_EXCL|O_NOFOLLOW``) and ``renameat``-ed over whatever was there
(a tenant's symlink is replaced, not written through); owners, modes and times are set
through the new file's fd or with ``AT_SYMLINK_NOFOLLOW`` on a single name relative to
a directory fd that was itself resolved inside the tree.

Nothing outside this module writes into a tenant tree with ``Path.write_text``,
``shutil.copy*``, ``tarfile.extract*`` or ``cp`` (``docs/security/tenant-trees.md``).
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import posixpath
import secrets
import stat
import tarfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO

__all__ = ["Tree", "TreeError", "copy_tree", "extract_tar", "match_glob", "read_tar_member", "openat2"]

# --- openat2(2) via ctypes -------------------------------------------------------------------

SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
AT_EMPTY_PATH = 0x1000

MAX_DEPTH = 256
"""Directories deep a tree may go: bounds the fds and stack one copy or walk holds, and the
lookups one archive member costs (legit trees stay far below; ``PATH_MAX`` allows ~2,000)."""

IN_TREE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
"""How every path inside a tree is resolved."""
LITERAL = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
"""For trees only the host writes (a fresh copy): no symlink is followed at all."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = IN_TREE) -> int:
    """``openat2(dirfd, path, {flags|O_CLOEXEC, mode, resolve})``; raises ``OSError``."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    raw = os.fsencode(path or ".")
    for _ in range(64):  # bounded: a tenant renaming in a loop must not pin a host thread
        fd = _libc.syscall(SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(raw), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise OSError(err, "openat2(2) is not available: tenant trees need Linux >= 5.6", path)
        if err != errno.EAGAIN:  # EAGAIN: a rename raced the lookup (RESOLVE_IN_ROOT); retry
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the tree kept changing during the lookup", path)


def _linkat_fd(fd: int, dirfd: int, name: str) -> None:
    """Hard-link the inode ``fd`` refers to as ``name`` in ``dirfd`` (no path lookup at all)."""
    if _libc.linkat(fd, b"", dirfd, os.fsencode(name), AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


# --- the tree ----------------------------------------------------------------------------------


class TreeError(Exception):
    """A tenant tree refused an operation (escape attempt, wrong type, bad name)."""


def _parts(rel: str) -> list[str]:
    """Components of a name inside the tree; ``..`` is refused rather than clamped so a
    caller's own names can never silently mean something else."""
    out = []
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise TreeError(f"'..' in a path inside the tree: {rel!r}")
        if "\0" in part:
            raise TreeError(f"NUL in a path: {rel!r}")
        out.append(part)
    if len(out) > MAX_DEPTH:
        raise TreeError(f"a path deeper than {MAX_DEPTH} directories: {rel[:80]}...")
    return out


class Tree:
    """A directory the host works in on a tenant's behalf, by fd, never leaving it."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False, mode: int = 0o755,
                 follow: bool = True) -> None:
        """``follow=False``: names are taken literally — any symlink on the way is an error
        (for the runtime's own fixed names, e.g. the artifacts it removes from a layer)."""
        # The root's own path is the host's (a sandbox/layer/snapshot dir it named), but its
        # last component may already be tenant-made: refuse to open it through a symlink.
        if create:
            try:
                os.mkdir(root, mode)
            except FileExistsError:
                pass
        self.path = Path(root)
        self.fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.resolve = IN_TREE if follow else LITERAL

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- lookups --

    def open(self, rel: str, flags: int = os.O_RDONLY, mode: int = 0) -> int:
        """An fd for ``rel`` resolved inside the tree (add ``O_NOFOLLOW`` to refuse a final symlink)."""
        return openat2(self.fd, "/".join(_parts(rel)), flags, mode, self.resolve)

    def lstat(self, rel: str) -> os.stat_result:
        parent, name = self._parent(rel)
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def exists(self, rel: str) -> bool:
        try:
            self.lstat(rel)
            return True
        except (OSError, TreeError):
            return False

    def read_bytes(self, rel: str, limit: int = 1 << 20) -> bytes:
        fd = self.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TreeError(f"{rel} is not a regular file")
            chunks, left = [], limit
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _parent(self, rel: str, *, create: bool = False) -> tuple[int, str]:
        """``(dir fd, last name)``: the parent resolved inside the tree (made if ``create``)."""
        parts = _parts(rel)
        if not parts:
            raise TreeError("the tree root itself has no parent")
        parent = self.makedirs("/".join(parts[:-1])) if create else self.open(
            "/".join(parts[:-1]), os.O_PATH | os.O_DIRECTORY)
        return parent, parts[-1]

    def makedirs(self, rel: str, mode: int = 0o755, _depth: int = 0) -> int:
        """``mkdir -p`` inside the tree; returns an ``O_PATH`` fd of the directory.

        An existing symlink on the way is followed as the sandbox would (in the tree); a
        dangling one gets its target made, inside the tree, like ``mkdir -p`` through it."""
        if _depth > 40:
            raise TreeError(f"too many levels of symbolic links making {rel!r}")
        parts = _parts(rel)
        try:  # the common case: it is already there (one lookup instead of one per level)
            return self.open(rel, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            pass
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                prefix = "/".join(parts[: i + 1])
                try:
                    nfd = self.open(prefix, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        os.mkdir(part, mode, dir_fd=fd)
                        nfd = openat2(fd, part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, resolve=LITERAL)
                    except FileExistsError:
                        try:
                            target = os.readlink(part, dir_fd=fd)
                        except OSError:
                            raise TreeError(f"{prefix} appeared while it was being made") from None
                        base = "/" + "/".join(parts[:i])
                        os.close(self.makedirs(_clamp(posixpath.join(base, target)), mode, _depth + 1))
                        nfd = self.open(prefix, os.O_PATH | os.O_DIRECTORY)
                except NotADirectoryError:
                    raise TreeError(f"{prefix} is not a directory") from None
                except OSError as exc:
                    if exc.errno == errno.EXDEV:
                        raise TreeError(f"{prefix} leads out of the tree (another mount)") from None
                    if exc.errno == errno.ELOOP:
                        raise TreeError(f"{prefix} cannot be resolved inside the tree (a symlink loop or a "
                                        "/proc magic link)") from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- writes (the final name is replaced, never followed) --

    def _clear(self, parent: int, name: str) -> None:
        """Remove a non-directory at ``name`` (a symlink is removed, not followed)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise TreeError(f"{name} is a directory")
        os.unlink(name, dir_fd=parent)

    def write_file(self, rel: str, data: bytes | str | IO[bytes], mode: int = 0o644,
                   uid: int | None = None, gid: int | None = None, mtime: float | None = None) -> None:
        """Write a regular file at ``rel``, atomically replacing what was there (a symlink,
        a whiteout, a file) — never writing through it. Missing parents are made."""
        parent, name = self._parent(rel, create=True)
        tmp = f".sandlot-{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
            try:
                if isinstance(data, str):
                    data = data.encode()
                if isinstance(data, bytes):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                else:
                    for chunk in iter(partial(data.read, 1 << 20), b""):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                _set_attrs_fd(fd, mode, uid, gid, mtime)
            finally:
                os.close(fd)
            try:
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except IsADirectoryError:
                raise TreeError(f"{rel} is a directory") from None
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise TreeError(f"{rel} is a directory") from None
                raise
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except OSError:
                pass
            raise
        finally:
            os.close(parent)

    def mkdir(self, rel: str, mode: int = 0o755, uid: int | None = None, gid: int | None = None) -> None:
        """A directory at ``rel`` (an existing directory is kept; any other entry replaced)."""
        parent, name = self._parent(rel, create=True)
        try:
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=parent)
                    os.mkdir(name, 0o700, dir_fd=parent)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = openat2(parent, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, resolve=LITERAL)
            try:
                _set_attrs_fd(fd, mode, uid, gid, None)
            finally:
                os.close(fd)
        finally:
            os.close(parent)

    def symlink(self, rel: str, target: str, uid: int | None = None, gid: int | None = None) -> None:
        """A symlink at ``rel`` whose target is kept verbatim (the host never follows it)."""
        parent, name = self._parent(rel, create=True)
        try:
            self._clear(parent, name)
            os.symlink(target, name, dir_fd=parent)
            if uid is not None or gid is not None:
                os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid,
                         dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def hardlink(self, rel: str, existing: str) -> None:
        """Hard-link ``existing`` (resolved inside this tree, final symlink not followed) as ``rel``."""
        try:
            src = self.open(existing, os.O_PATH | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise TreeError(f"hard link target {existing!r} is not in the tree") from None
        try:
            if stat.S_ISDIR(os.fstat(src).st_mode):
                raise TreeError(f"hard link to a directory: {existing!r}")
            parent, name = self._parent(rel, create=True)
            try:
                self._clear(parent, name)
                _linkat_fd(src, parent, name)
            finally:
                os.close(parent)
        finally:
            os.close(src)

    def remove(self, rel: str) -> bool:
        """Unlink a non-directory at ``rel`` (a symlink itself, never its target); False if absent
        (or unreachable: a parent that is not a directory, or a symlink with ``follow=False``)."""
        try:
            parent, name = self._parent(rel)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                return False
            raise
        try:
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(st.st_mode):
                raise TreeError(f"{rel} is a directory")
            os.unlink(name, dir_fd=parent)
            return True
        finally:
            os.close(parent)

    def rmdir_if_empty(self, rel: str) -> bool:
        try:
            parent, name = self._parent(rel)
        except OSError:
            return False
        try:
            os.rmdir(name, dir_fd=parent)  # rmdir never follows a symlink (ENOTDIR)
            return True
        except OSError:
            return False
        finally:
            os.close(parent)

    def set_attrs(self, rel: str, mode: int | None = None, uid: int | None = None,
                  gid: int | None = None, mtime: float | None = None) -> None:
        """Owner, mode and mtime of ``rel`` itself (``lchown`` semantics for a symlink)."""
        parent, name = self._parent(rel)
        try:
            _set_attrs_at(parent, name, os.stat(name, dir_fd=parent, follow_symlinks=False), mode, uid, gid, mtime)
        finally:
            os.close(parent)

    # -- reading --

    def walk(self, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
        """Every entry under ``rel`` (relative names, ``lstat`` results), never descending
        through a symlink or into another mount."""
        top = self.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        base = "/".join(_parts(rel))
        yield from _walk_fd(top, base, len(_parts(rel)))


def _walk_fd(dirfd: int, base: str, depth: int) -> Iterator[tuple[str, os.stat_result]]:
    try:
        if depth > MAX_DEPTH:
            raise TreeError(f"the tree is deeper than {MAX_DEPTH} directories at {base[:80]}...")
        dev = os.fstat(dirfd).st_dev
        with os.scandir(dirfd) as it:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        for name, st in entries:
            path = f"{base}/{name}" if base else name
            yield path, st
            if stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                try:
                    child = openat2(dirfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, resolve=LITERAL)
                except OSError:
                    continue  # swapped for something else meanwhile: not ours to follow
                yield from _walk_fd(child, path, depth + 1)
    finally:
        os.close(dirfd)


def _clamp(path: str) -> str:
    """An absolute in-tree name with ``..`` clamped at the root (what ``RESOLVE_IN_ROOT`` does)."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/".join(out)


def _set_attrs_fd(fd: int, mode: int | None, uid: int | None, gid: int | None, mtime: float | None) -> None:
    if uid is not None or gid is not None:  # before chmod: chown clears set-id bits
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None:
        os.fchmod(fd, mode & 0o7777)
    if mtime is not None:
        os.utime(fd, (mtime, mtime))


def _set_attrs_at(parent: int, name: str, st: os.stat_result, mode: int | None, uid: int | None,
                  gid: int | None, mtime: float | None) -> None:
    """Attributes of one name in ``parent`` without following it (symlinks get no chmod)."""
    if uid is not None or gid is not None:
        os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid, dir_fd=parent, follow_symlinks=False)
    if mode is not None and not stat.S_ISLNK(st.st_mode):
        os.chmod(name, mode & 0o7777, dir_fd=parent, follow_symlinks=False)
    if mtime is not None:
        os.utime(name, (mtime, mtime), dir_fd=parent, follow_symlinks=False)


# --- archives ----------------------------------------------------------------------------------


def _member_name(raw: str) -> str:
    name = posixpath.normpath(raw)
    if raw.startswith("/") or name == ".." or name.startswith("../") or "/../" in name:
        raise TreeError(f"archive member escapes the tree: {raw}")
    return "" if name == "." else name


def extract_tar(archive: str | os.PathLike[str], tree: Tree) -> list[str]:
    """Unpack a tar(.gz) into ``tree``; returns the names of members it skipped.

    Regular files, directories, symlinks (kept verbatim, never followed) and hard links
    (to entries already inside the tree) are made with their numeric owners and modes —
    set-id bits included, since they only matter inside the sandbox the tree becomes.
    Device nodes and FIFOs are skipped. Absolute names and ``..`` are refused."""
    skipped: list[str] = []
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _member_name(member.name)
                if member.isdev():  # character/block devices and FIFOs
                    skipped.append(member.name)
                    continue
                if not name:
                    dirs.append((name, member))
                    continue
                if member.isdir():
                    tree.mkdir(name, 0o700)
                    dirs.append((name, member))
                elif member.issym():
                    tree.symlink(name, member.linkname, member.uid, member.gid)
                    tree.set_attrs(name, mtime=member.mtime)
                elif member.islnk():
                    tree.hardlink(name, _member_name(member.linkname) or ".")
                elif member.isreg():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    tree.write_file(name, handle, member.mode, member.uid, member.gid, member.mtime)
                else:
                    skipped.append(member.name)
    except (tarfile.TarError, EOFError) as exc:
        raise TreeError(f"not a readable tar archive: {exc}") from None
    for name, member in sorted(dirs, key=lambda d: d[0].count("/"), reverse=True):
        if name:
            tree.set_attrs(name, member.mode, member.uid, member.gid, member.mtime)
    return skipped


def read_tar_member(archive: str | os.PathLike[str], name: str, limit: int) -> bytes | None:
    """One regular file's bytes from a tar, read in memory (nothing touches the host's
    filesystem); ``None`` if absent. Links are not followed, even inside the archive."""
    bare = name.removeprefix("./")
    try:
        with tarfile.open(archive, "r:*") as tar:
            for candidate in (bare, "./" + bare):
                try:
                    info = tar.getmember(candidate)
                except KeyError:
                    continue
                if not info.isreg() or info.size > limit:
                    raise TreeError(f"{name} is not a regular file under {limit} bytes")
                handle = tar.extractfile(info)
                assert handle is not None
                return handle.read(limit)
    except (tarfile.TarError, EOFError) as exc:
        raise TreeError(f"not a readable tar archive: {exc}") from None
    return None


# --- COPY globs --------------------------------------------------------------------------------


def match_glob(tree: Tree, pattern: str) -> list[str]:
    """Names in ``tree`` a COPY source pattern selects (``*``, ``?``, ``[..]`` within one
    component, ``**`` for any depth; hidden names included), as relative paths.

    Literal components are looked up inside the tree (an in-tree symlinked directory works);
    wildcards list only directories reached inside the tree, and ``**`` does not descend
    through symlinks, so nothing outside the tree is ever listed or stat-ed."""
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if not parts:
        return ["."]
    if ".." in parts:
        return []
    found: set[str] = set()
    _match(tree, "", parts, found)
    return sorted(found)


def _magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _entries(tree: Tree, base: str) -> list[tuple[str, os.stat_result]]:
    try:
        fd = tree.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, TreeError):
        return []
    try:
        with os.scandir(fd) as it:
            return [(e.name, e.stat(follow_symlinks=False)) for e in it]
    finally:
        os.close(fd)


def _match(tree: Tree, base: str, parts: list[str], found: set[str]) -> None:
    def join(name: str) -> str:
        return f"{base}/{name}" if base else name

    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:
            found.update(join(n) for n, _ in _walk_names(tree, base))
            return
        _match(tree, base, rest, found)  # zero directories
        for rel, st in _walk_names(tree, base):
            if stat.S_ISDIR(st.st_mode):
                _match(tree, rel, rest, found)
        return
    if not _magic(head):
        candidates: list[tuple[str, os.stat_result | None]] = [(head, None)]
        if not tree.exists(join(head)):
            return
    else:
        candidates = [(n, st) for n, st in _entries(tree, base) if fnmatch.fnmatchcase(n, head)]
    for name, _ in candidates:
        if rest:
            _match(tree, join(name), rest, found)
        else:
            found.add(join(name))


def _walk_names(tree: Tree, base: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        yield from tree.walk(base)
    except (OSError, TreeError):
        return


# --- copies of whole trees ---------------------------------------------------------------------


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a tenant tree (an overlay upper dir, a merged layer stack) into a new ``dst``.

    By fd from top to bottom: nothing is ever followed in ``src`` (a directory swapped for
    a symlink mid-copy is skipped) and every entry in ``dst`` is created fresh
    (``O_EXCL``/``mkdirat``/``mknodat``), so the copy can neither read nor write outside the
    two trees. Kept: numeric owners, modes (set-id bits too), mtimes, xattrs (``trusted.``
    overlay markers included), hard links within the tree, symlinks verbatim, and device
    nodes, FIFOs and sockets as they are — overlay whiteouts are 0:0 character devices and
    must survive in a copied upper dir."""
    os.mkdir(dst, 0o700)
    with Tree(src) as s, Tree(dst) as d:
        sfd = openat2(s.fd, ".", os.O_RDONLY | os.O_DIRECTORY)
        dfd = openat2(d.fd, ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _copy_dir(sfd, dfd, "", {}, d.fd, os.fstat(sfd).st_dev, 0)
            _copy_meta_fd(sfd, dfd, os.fstat(sfd))
        finally:
            os.close(sfd)
            os.close(dfd)


def _copy_dir(sfd: int, dfd: int, base: str, links: dict[tuple[int, int], str], droot: int, dev: int,
              depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TreeError(f"the tree is deeper than {MAX_DEPTH} directories at {base[:80]}...")
    with os.scandir(sfd) as it:
        names = [e.name for e in it]
    for name in names:
        rel = f"{base}/{name}" if base else name
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        kind = stat.S_IFMT(st.st_mode)
        linked = kind != stat.S_IFDIR and st.st_nlink > 1
        if linked and (st.st_dev, st.st_ino) in links:
            try:
                existing = openat2(droot, links[(st.st_dev, st.st_ino)], os.O_PATH | os.O_NOFOLLOW, resolve=LITERAL)
                try:
                    _linkat_fd(existing, dfd, name)
                    continue
                finally:
                    os.close(existing)
            except OSError:
                pass  # the first copy did not survive: copy this one on its own
        if kind == stat.S_IFDIR:
            if st.st_dev != dev:
                continue  # a mount inside the tree is not part of it
            os.mkdir(name, 0o700, dir_fd=dfd)
            try:
                csfd = openat2(sfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, resolve=LITERAL)
            except OSError:
                continue
            try:
                cdfd = openat2(dfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, resolve=LITERAL)
                try:
                    _copy_dir(csfd, cdfd, rel, links, droot, dev, depth + 1)
                    _copy_meta_fd(csfd, cdfd, os.fstat(csfd))
                finally:
                    os.close(cdfd)
            finally:
                os.close(csfd)
        elif kind == stat.S_IFREG:
            try:
                ifd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sfd)
            except OSError:
                continue
            try:
                fst = os.fstat(ifd)
                if not stat.S_ISREG(fst.st_mode):
                    continue
                ofd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=dfd)
                try:
                    _copy_data(ifd, ofd, fst.st_size)
                    _copy_meta_fd(ifd, ofd, fst)
                finally:
                    os.close(ofd)
            finally:
                os.close(ifd)
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            _copy_meta_at(sfd, dfd, name, st)
        else:  # whiteouts (char 0:0), other devices, FIFOs, sockets: recreated as they are
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dfd)
            _copy_meta_at(sfd, dfd, name, st)
        if linked:
            links.setdefault((st.st_dev, st.st_ino), rel)


def _copy_data(ifd: int, ofd: int, size: int) -> None:
    done = 0
    while True:
        try:
            n = os.copy_file_range(ifd, ofd, 1 << 30)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            n = os.sendfile(ofd, ifd, None, 1 << 30)
        if n == 0:
            break
        done += n
    if done < size:  # a sparse tail: keep the length
        os.ftruncate(ofd, size)


def _copy_xattrs(src: int | str, dst: int | str, follow: bool = True) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError:
        return
    for key in names:
        try:
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=follow), follow_symlinks=follow)
        except OSError:
            pass  # e.g. security.* the target refuses: the copy still stands


def _copy_meta_fd(sfd: int, dfd: int, st: os.stat_result) -> None:
    _copy_xattrs(sfd, dfd)
    os.fchown(dfd, st.st_uid, st.st_gid)
    os.fchmod(dfd, stat.S_IMODE(st.st_mode))
    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_meta_at(sfd: int, dfd: int, name: str, st: os.stat_result) -> None:
    # the dir fds' /proc/self/fd links are the host's own and name the very directories
    # we hold; the last component is not followed
    _copy_xattrs(f"/proc/self/fd/{sfd}/{name}", f"/proc/self/fd/{dfd}/{name}", follow=False)
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd, follow_symlinks=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
