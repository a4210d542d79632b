"""User namespaces for sandboxes: root inside is an unprivileged uid on the host.

Docker's ``userns-remap`` model: every sandbox of a server instance maps its ids
0..size-1 to one subordinate host range ``base..base+size-1`` (:class:`IdRange`). What the
sandbox writes to its overlay upper dir (its own ext4 disk) is owned by shifted ids on
the host natively. The template layers stay 0-based on disk (shared by every instance
and by sandboxes paused before user namespaces existed) and are mounted under each
sandbox's overlay as **idmapped** lower layers: an ``open_tree(OPEN_TREE_CLONE)`` bind of
the layer, ``mount_setattr(MOUNT_ATTR_IDMAP)`` with a user namespace carrying the range's
mapping, then ``move_mount`` (runc 1.1 has no idmapped mounts; util-linux 2.38's
``X-mount.idmap`` silently does nothing, so it is done here through the syscalls).

Template builds go the other way: a build step's upper dir holds shifted ids and is
shifted back to 0-based (:func:`unshift_tree`) before it becomes a layer.
"""
from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandlot.tenant_fs import Tree

from .errors import SandboxRuntimeError

SYS_OPEN_TREE = 428       # the same numbers on x86_64 and aarch64 (unified syscall table)
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000
MNT_DETACH = 2

OVERFLOW_ID = 65534
"""What an id outside the range becomes when shifted (the kernel's overflow uid)."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


@dataclass(frozen=True)
class IdRange:
    """Sandbox ids ``0..size-1`` are host ids ``base..base+size-1`` (uids and gids alike)."""

    base: int
    size: int = 65536

    def __post_init__(self) -> None:
        if self.base <= 0 or self.size <= 0 or self.base + self.size > 2**32 - 1:
            raise ValueError(f"invalid id range {self.base}:{self.size}")
        if self.size < 65536:
            # uid 65534 (nobody) and the usual system/user ids must exist inside
            raise ValueError("the id range must be at least 65536 ids wide")

    @classmethod
    def parse(cls, text: str) -> "IdRange":
        """``"BASE:SIZE"`` or ``"BASE"`` (65536 wide)."""
        base, _, size = text.strip().partition(":")
        try:
            return cls(int(base), int(size) if size else 65536)
        except ValueError as exc:
            raise ValueError(f"SANDLOT_USERNS_RANGE must be BASE[:SIZE] (e.g. 1000000000:65536): {text!r}") from exc

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "IdRange | None":
        return cls(int(data["base"]), int(data["size"])) if data else None

    @classmethod
    def from_oci(cls, cfg: dict[str, Any]) -> "IdRange | None":
        """The range of an OCI config (``None`` if it has no user namespace)."""
        linux = cfg.get("linux", {})
        if not any(ns.get("type") == "user" for ns in linux.get("namespaces", [])):
            return None
        m = linux["uidMappings"][0]
        return cls(int(m["hostID"]), int(m["size"]))

    def oci_mappings(self) -> list[dict[str, Any]]:
        return [{"containerID": 0, "hostID": self.base, "size": self.size}]

    def to_host(self, inside: int) -> int:
        return self.base + inside if 0 <= inside < self.size else self.base + OVERFLOW_ID

    def to_inside(self, host: int) -> int | None:
        return host - self.base if self.base <= host < self.base + self.size else None


DEFAULT_RANGE = IdRange(1_000_000_000, 65536)


# --- a user namespace to idmap mounts with ----------------------------------------------------

_userns_fds: dict[IdRange, int] = {}
_userns_lock = threading.Lock()


def userns_fd(rng: IdRange) -> int:
    """An fd of a user namespace with ``rng``'s mapping (made once per process and range).

    A helper enters a new user namespace and waits; we write its maps, keep an fd of the
    namespace and let it exit (the fd and every mount idmapped with it keep it alive)."""
    with _userns_lock:
        fd = _userns_fds.get(rng)
        if fd is not None:
            return fd
        proc = subprocess.Popen(["/usr/bin/unshare", "--user", "--", "/bin/sh", "-c", "echo ready; read _"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdin is not None
            if proc.stdout.readline().strip() != b"ready":
                raise SandboxRuntimeError(f"cannot create a user namespace: {proc.stderr.read().decode()[-300:]}"
                                          if proc.stderr else "cannot create a user namespace")
            line = f"0 {rng.base} {rng.size}\n"
            Path(f"/proc/{proc.pid}/uid_map").write_text(line)
            Path(f"/proc/{proc.pid}/gid_map").write_text(line)
            fd = os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if proc.stdin:
                proc.stdin.close()
            proc.wait()
        _userns_fds[rng] = fd
        return fd


# --- idmapped bind mounts -----------------------------------------------------------------------


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def idmapped_bind(source: Path, target: Path, rng: IdRange, *, read_only: bool = True) -> None:
    """Bind ``source`` at ``target`` with its ids shifted into ``rng`` (0 → base …)."""
    tree = _check(_libc.syscall(SYS_OPEN_TREE, ctypes.c_int(-100), os.fsencode(str(source)),
                                ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC)), f"open_tree {source}")
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY if read_only else 0), 0, 0, userns_fd(rng))
        _check(_libc.syscall(SYS_MOUNT_SETATTR, ctypes.c_int(tree), b"", ctypes.c_uint(AT_EMPTY_PATH),
                             ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
               f"mount_setattr(MOUNT_ATTR_IDMAP) {source}")
        _check(_libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(tree), b"", ctypes.c_int(-100),
                             os.fsencode(str(target)), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)),
               f"move_mount {source} -> {target}")
    finally:
        os.close(tree)


def detach(target: Path) -> None:
    """Lazy unmount (overlay keeps its own private clones of its lower mounts)."""
    if _libc.umount2(os.fsencode(str(target)), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):   # EINVAL (not mounted), ENOENT
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


# --- shifting owners of a tree ----------------------------------------------------------------------


def _shift_tree(root: Path, new_ids: Callable[[int, int, os.stat_result], tuple[int, int]]) -> int:
    """Re-own every entry of ``root`` (never following a symlink or crossing a mount):
    ``new_ids(uid, gid, st) -> (uid, gid)``. Set-id bits, which chown clears, are put
    back. Returns the number of entries changed."""
    changed = 0
    with Tree(root) as tree:
        top = os.fstat(tree.fd)
        for rel, st in [("", top), *tree.walk("")]:
            uid, gid = new_ids(st.st_uid, st.st_gid, st)
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            if rel == "":   # the root itself: a host-named dir, opened above without following
                os.chown(root, uid, gid, follow_symlinks=False)
            else:
                setid = st.st_mode & (stat.S_ISUID | stat.S_ISGID)
                mode = st.st_mode & 0o7777 if setid and stat.S_ISREG(st.st_mode) else None
                tree.set_attrs(rel, mode=mode, uid=uid, gid=gid)
            changed += 1
    return changed


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def unshift_tree(root: Path, rng: IdRange) -> int:
    """A build step's upper dir (written through ``rng``) back to 0-based ids, for a layer.

    Ids outside the range (a tenant can't make them; the kernel's overflow or overlay's own
    whiteouts) become nobody, except whiteouts, which overlay recognises by type alone and
    which keep 0:0 as every other layer's do."""
    def new_ids(uid: int, gid: int, st: os.stat_result) -> tuple[int, int]:
        if _is_whiteout(st):
            return 0, 0
        u, g = rng.to_inside(uid), rng.to_inside(gid)
        return (OVERFLOW_ID if u is None else u), (OVERFLOW_ID if g is None else g)
    return _shift_tree(root, new_ids)


def shift_tree(root: Path, rng: IdRange) -> int:
    """A host-made tree (a build context) into ``rng``, so the sandbox sees its owners."""
    def new_ids(uid: int, gid: int, st: os.stat_result) -> tuple[int, int]:
        if rng.to_inside(uid) is not None and rng.to_inside(gid) is not None:
            return uid, gid
        return rng.to_host(uid), rng.to_host(gid)
    return _shift_tree(root, new_ids)


# --- the sandbox's network namespace, seen from a user namespace that doesn't own it -----------

CLONE_NEWNET = 0x40000000
NETNS_SYSCTLS = {
    # ICMP echo sockets for every group: ``ping`` needs no CAP_NET_RAW over the netns
    "net/ipv4/ping_group_range": "0 2147483647",
    # sandbox root has no CAP_NET_BIND_SERVICE over the netns: ports < 1024 stay usable
    "net/ipv4/ip_unprivileged_port_start": "0",
}
SYSFS_FLAGS = 0x1 | 0x2 | 0x4 | 0x8   # MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def prepare_netns(netns_path: str, sysfs_target: Path) -> None:
    """Set up what a userns sandbox can't do itself in the pooled netns (owned by the init
    user namespace): the sysctls above, and a sysfs of that netns at ``sysfs_target`` for
    the sandbox to bind at ``/sys`` (mounting sysfs needs CAP_SYS_ADMIN over the netns's
    owner; a bind of the host's ``/sys`` would show the host's network devices).

    Runs in the calling thread, which enters the netns and comes back: call it through
    ``asyncio.to_thread``."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(target, CLONE_NEWNET), f"setns {netns_path}")
        try:
            for key, value in NETNS_SYSCTLS.items():
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
            sysfs_target.mkdir(exist_ok=True)
            if not os.path.ismount(sysfs_target):
                _check(_libc.mount(b"sysfs", os.fsencode(str(sysfs_target)), b"sysfs", SYSFS_FLAGS, None),
                       f"mount sysfs on {sysfs_target}")
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:   # never leave a pool thread in a sandbox's netns
                os._exit(70)
    finally:
        os.close(own)
        os.close(target)


def sysfs_mount(source: Path) -> dict[str, Any]:
    """The OCI mount of ``/sys`` for a userns sandbox: a bind of :func:`prepare_netns`'s sysfs."""
    return {"destination": "/sys", "type": "bind", "source": str(source),
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}


# --- host paths the sandbox's runc init must traverse ----------------------------------------


def open_dir_to_range(path: Path, rng: IdRange) -> None:
    """Let the range's root *traverse* ``path`` (a 0700 data dir): group = the range's base
    gid, mode 0710. runc sets up mounts from inside the user namespace, as that uid/gid; no
    one else gets in (Docker's userns-remap makes its data root 0711 instead, which would
    let any local user open files by name)."""
    os.chown(path, -1, rng.to_host(0))
    os.chmod(path, 0o710)


def untraversable(path: Path, rng: IdRange) -> Path | None:
    """The first ancestor of ``path`` (itself included) the range's root can't search."""
    root = rng.to_host(0)
    for p in [*reversed(Path(path).resolve().parents), Path(path).resolve()]:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return None
        if st.st_uid == root:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == root:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return p
    return None
