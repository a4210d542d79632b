"""Each boot of a sandbox gets its own ``/proc/sys/kernel/random/boot_id``, as a VM's would.

The kernel has one boot id for the host and every container on it; tools (journald,
systemd's machine checks, agents that key caches or detect reboots by it) read it to tell
one boot from another. A sandbox's is a file in its host-owned directory, written afresh
on every cold boot (create, filesystem-only resume, a fork without memory) and left as it
is by a memory restore, which is the same boot carried on.

runc refuses bind mounts inside ``/proc`` other than lxcfs' files, so the file reaches the
sandbox in two steps: the directory holding it is an ordinary read-only config mount
(``MOUNT_DIR``: runc gives CRIU its external-mount mapping, so a checkpoint restores it
from the sandbox's own directory), and between ``runc create`` and ``runc start`` — before
any process of the sandbox runs — a read-only clone of the host file is moved over
``/proc/sys/kernel/random/boot_id`` in the sandbox's mount namespace. CRIU sees that mount
as a bind of the config mount's tree and restores it as one. Nothing is executed in the
sandbox and no path the tenant shaped is followed: the source is opened on the host, the
target is resolved in the sandbox's procfs. The tenant has no ``CAP_SYS_ADMIN`` to unmount
it, and the file is read-only both as a mount and as a host file it does not own.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from .base import BindMount

log = logging.getLogger(__name__)

BOOT_DIR = "boot"
"""In the sandbox's host directory: holds ``boot_id`` (nothing else)."""
FILE = "boot_id"
MOUNT_DIR = "/.sandlot-boot"
"""Where the sandbox sees ``BOOT_DIR`` (read-only); its file is what is bound over the kernel's."""
TARGET = b"/proc/sys/kernel/random/boot_id"

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442   # x86_64 and arm64 alike
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC, _AT_EMPTY_PATH, _AT_FDCWD = 1, 0o2000000, 0x1000, -100
_AT_SYMLINK_NOFOLLOW = 0x100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY_NOSUID_NODEV_NOEXEC = 0x1 | 0x2 | 0x4 | 0x8
_CLONE_NEWNS = 0x20000


def path(sandbox_dir: Path) -> Path:
    return sandbox_dir / BOOT_DIR / FILE


def new_boot(sandbox_dir: Path) -> str:
    """A fresh boot id for the sandbox's next cold boot (replacing the file: the previous
    boot's mount, if any, is of a container that is gone)."""
    boot_dir = sandbox_dir / BOOT_DIR
    boot_dir.mkdir(mode=0o755, exist_ok=True)
    value = str(uuid.uuid4())
    tmp = boot_dir / f".{FILE}.tmp"
    tmp.write_text(value + "\n")
    tmp.chmod(0o444)
    os.replace(tmp, boot_dir / FILE)
    return value


def copy_boot(source_dir: Path, sandbox_dir: Path) -> None:
    """A memory clone carries its source's boot on: the same boot id (a snapshot's copy)."""
    boot_dir = sandbox_dir / BOOT_DIR
    boot_dir.mkdir(mode=0o755, exist_ok=True)
    data = (source_dir / FILE).read_bytes()
    tmp = boot_dir / f".{FILE}.tmp"
    tmp.write_bytes(data)
    tmp.chmod(0o444)
    os.replace(tmp, boot_dir / FILE)


def bind(sandbox_dir: Path) -> BindMount:
    return BindMount(sandbox_dir / BOOT_DIR, MOUNT_DIR, read_only=True)


def in_config(config_json: Path) -> bool:
    """Whether the sandbox was created with a boot id (sandboxes from before it was added
    are left as they were: their checkpoints know nothing of the mount)."""
    try:
        cfg: dict[str, Any] = json.loads(config_json.read_text())
    except (OSError, ValueError):
        return False
    return has_mount(cfg)


def has_mount(cfg: dict[str, Any]) -> bool:
    return any(m.get("destination") == MOUNT_DIR for m in cfg.get("mounts", []))


def retarget(cfg: dict[str, Any], sandbox_dir: Path) -> None:
    """Point a copied config (a clone's, from its snapshot) at this sandbox's boot dir."""
    for m in cfg.get("mounts", []):
        if m.get("destination") == MOUNT_DIR:
            m["source"] = str((sandbox_dir / BOOT_DIR).resolve())


def _libc() -> tuple[Any, Any]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return ctypes, libc


def install(init_pid: int, sandbox_dir: Path) -> bool:
    """Bind the sandbox's boot id, read-only, over the kernel's in its mount namespace.
    Call after ``runc create``, before ``runc start``. False (and a log line) if it could
    not be done: the sandbox then reads the host's boot id, as before."""
    source = str(path(sandbox_dir)).encode()
    try:
        ns = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("boot id not installed in pid %s: %s", init_pid, exc)
        return False
    ctypes, libc = _libc()
    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY_NOSUID_NODEV_NOEXEC, 0, 0, 0)   # struct mount_attr
    attr_ref, attr_size = ctypes.byref(attr), ctypes.sizeof(attr)
    pid = os.fork()
    if pid == 0:   # the child: single-threaded, as setns(CLONE_NEWNS) requires; no exec
        try:
            fd = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, source,
                              _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_SYMLINK_NOFOLLOW)
            if fd < 0:
                os._exit(2)
            if libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, attr_ref, attr_size) != 0:
                os._exit(3)
            if libc.setns(ns, _CLONE_NEWNS) != 0:
                os._exit(4)
            if libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, TARGET, _MOVE_MOUNT_F_EMPTY_PATH) != 0:
                os._exit(5)
        except BaseException:
            os._exit(6)
        os._exit(0)
    os.close(ns)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return True
    log.warning("boot id not installed in pid %s (step %s)", init_pid,
                os.WEXITSTATUS(status) if os.WIFEXITED(status) else "signal")
    return False
