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
import shutil
import subprocess
import time
from pathlib import Path

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
