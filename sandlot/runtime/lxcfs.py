"""Per-sandbox views of ``/proc/meminfo``, ``/proc/cpuinfo``, ``/proc/uptime``… through lxcfs.

Without it a sandbox's ``free``, ``top`` and ``psutil`` report the host's 24 GiB and
uptime, and programs that size themselves from ``/proc/meminfo`` get OOM-killed at the
sandbox's limit. lxcfs (Debian's package, the same FUSE daemon LXD and Incus use) answers
each read from the reading process's cgroups; its files are bind-mounted over the
sandbox's ``/proc`` entries (runc allows exactly these). One daemon serves every server
and sandbox on the machine and is left running when a server stops, because sandboxes
outlive servers; ``--enable-cfs`` makes the CPU views follow the sandbox's CPU quota.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import overlay
from .base import BindMount

log = logging.getLogger(__name__)

PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "swaps", "diskstats")
FSTYPE = "fuse.lxcfs"


def _mounted(path: Path) -> bool:
    return overlay.mount_type(path) == FSTYPE


def _healthy(path: Path) -> bool:
    try:
        (path / "proc" / "meminfo").read_bytes()
        return True
    except OSError:   # ENOTCONN: the daemon died; its mount is dead
        return False


def ensure(path: Path, binary: str | None = None) -> bool:
    """Mount lxcfs at ``path`` unless a live one is there; False (and a log line) when it
    can't be had, in which case sandboxes see the host's ``/proc`` files as before."""
    binary = binary or shutil.which("lxcfs") or "/usr/bin/lxcfs"
    if _mounted(path):
        if _healthy(path):
            return True
        log.warning("lxcfs at %s is dead; mounting a new one (running sandboxes keep the dead view)", path)
        subprocess.run(["umount", "-l", str(path)], check=False)
    if not Path(binary).exists():
        log.warning("lxcfs not installed: sandboxes see the host's /proc/meminfo and /proc/cpuinfo")
        return False
    path.mkdir(parents=True, exist_ok=True)
    log_file = open(path.parent / f"{path.name}.log", "ab")
    # daemonizes itself; its own session so it outlives this server (sandboxes do)
    subprocess.Popen([binary, "--enable-cfs", "--pidfile", str(path.parent / f"{path.name}.pid"), str(path)],
                     stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    log_file.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _mounted(path) and _healthy(path):
            return True
        time.sleep(0.05)
    log.warning("lxcfs did not come up at %s (see %s.log)", path, path)
    return False


def proc_mounts(path: Path) -> list[BindMount]:
    """The bind mounts that give a sandbox its own ``/proc`` views, read-only: the files
    are one FUSE daemon shared by every sandbox, and nothing in them is writable anyway."""
    return [BindMount(path / "proc" / name, f"/proc/{name}", read_only=True) for name in PROC_FILES]


# --- a dead lxcfs, repaired under running sandboxes (issue 12) ------------------------------
#
# When the daemon dies, every sandbox's /proc/meminfo (a bind of the dead FUSE mount) fails
# with ENOTCONN until it is recreated. ``repair`` mounts a new lxcfs (``ensure``) and moves a
# fresh read-only clone of each view into every running sandbox's mount namespace, in place
# of the dead one (open_tree + setns + move_mount: nothing is executed there, and only the
# fixed ``/proc/<name>`` paths of the sandbox's own namespace are touched). Without a new
# lxcfs the dead views are unmounted instead: the sandbox then reads the host's /proc files
# (as with ``SANDLOT_LXCFS=false``), which beats an error.

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442   # x86_64 and arm64 alike
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC, _AT_EMPTY_PATH, _AT_FDCWD = 1, 0o2000000, 0x1000, -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY_NOSUID_NODEV_NOEXEC = 0x1 | 0x2 | 0x4 | 0x8
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
_CLONE_NEWNS = 0x20000


def _libc() -> tuple[Any, Any]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return ctypes, libc


def has_views(init_pid: int) -> bool:
    """Whether the sandbox of ``init_pid`` was given lxcfs views (its mounts say so)."""
    try:
        mountinfo = Path(f"/proc/{init_pid}/mountinfo").read_text()
    except OSError:
        return False
    return any(f" /proc/{name} " in line and FSTYPE in line for line in mountinfo.splitlines()
               for name in PROC_FILES)


def _clone_view(ctypes: Any, libc: Any, source: Path) -> int:
    fd = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, str(source).encode(), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"open_tree {source}")
    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY_NOSUID_NODEV_NOEXEC, 0, 0, 0)  # struct mount_attr
    libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))
    return int(fd)


def _swap_in_namespace(init_pid: int, path: Path | None) -> bool:
    """In a forked child: enter the sandbox's mount namespace, drop the dead views and (with
    ``path``) move fresh clones of the live ones in. Returns whether every view is live."""
    ctypes, libc = _libc()
    try:
        ns = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    pid = os.fork()
    if pid == 0:   # the child: single-threaded, as setns(CLONE_NEWNS) requires
        ok = True
        try:
            clones = {name: _clone_view(ctypes, libc, path / "proc" / name) for name in PROC_FILES} if path else {}
            if libc.setns(ns, _CLONE_NEWNS) != 0:
                os._exit(2)
            for name in PROC_FILES:
                target = f"/proc/{name}".encode()
                libc.umount2(target, _MNT_DETACH | _UMOUNT_NOFOLLOW)   # the dead view (EINVAL: none)
                if name in clones and libc.syscall(_SYS_MOVE_MOUNT, clones[name], b"", _AT_FDCWD, target,
                                                   _MOVE_MOUNT_F_EMPTY_PATH) != 0:
                    ok = False
        except BaseException:
            os._exit(3)
        os._exit(0 if ok and clones else 1)
    os.close(ns)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def healthy(path: Path) -> bool:
    return _mounted(path) and _healthy(path)


def repair(path: Path, init_pids: list[int]) -> tuple[int, int]:
    """Bring lxcfs back at ``path`` and into the running sandboxes of ``init_pids`` (those that
    had views). Returns (sandboxes with live views again, sandboxes degraded to host views)."""
    live = ensure(path)
    fixed = degraded = 0
    for init_pid in init_pids:
        if not has_views(init_pid):
            continue
        if _swap_in_namespace(init_pid, path if live else None):
            fixed += 1
        else:
            degraded += 1
    log.warning("lxcfs repaired at %s: %d sandboxes got live views back, %d now read the host's /proc files",
                path, fixed, degraded)
    return fixed, degraded
