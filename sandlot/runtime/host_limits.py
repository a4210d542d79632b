"""Kernel limits, so that one sandbox exhausting one cannot starve another sandbox or the host.

Per-user kernel counters (inotify instances and watches, queued signals, POSIX message
queue bytes, SHM_LOCK'ed memory, processes) are kept per uid: without a user namespace
every sandbox's root is the host's uid 0 and every sandbox's ``user`` is the same uid 1000,
and with one, each sandbox's usage is still charged to the namespace's owner (uid 0) at
the host level. A finite per-user limit there is one pool that one sandbox can drain. So:

* the host-wide ceilings are raised (never lowered) to where no sandbox can reach them
  before its own cgroup stops it (``HOST_SYSCTLS``); inotify instances, watches, open files
  and queued signals are kernel memory charged to the sandbox's memory cgroup;
* the server raises its own per-user rlimits, and sandboxes inherit them (``bundle.py``),
  so another sandbox's usage never counts against a finite shared budget;
* what bounds one sandbox is its own: memory (memory cgroup), processes and threads (pids
  cgroup), open files per process (``RLIMIT_NOFILE``), message queues (its IPC
  namespace's ``fs.mqueue`` limits: 256 queues of 10 × 8 KiB).

See docs/security/network-and-limits.md.
"""
from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST_SYSCTLS: dict[str, int] = {
    "fs/inotify/max_user_instances": 2**31 - 1,   # Debian: 128 (uid 0's, shared by every sandbox root)
    "fs/inotify/max_user_watches": 2**31 - 1,     # scaled with RAM (≈ 190 k here)
    "fs/file-max": 2**63 - 1,                     # systemd's own default
    "kernel/pid_max": 4_194_304,                  # the 64-bit maximum (32768 here: 8 full sandboxes)
    # runc makes one session keyring per container, charged to the userns root's host uid:
    # Debian's 200 keys / 20000 bytes stopped creates at ~200 sandboxes (EDQUOT). Tenants
    # can't make keys (seccomp denies add_key/keyctl), so this is one key per sandbox.
    "kernel/keys/maxkeys": 1_000_000,             # root_maxkeys' default
    "kernel/keys/maxbytes": 25_000_000,           # root_maxbytes' default
}
"""Raised at start-up; each object is charged to the memory cgroup of the sandbox that made it."""

SHARED_RLIMITS = {
    "RLIMIT_NPROC": resource.RLIMIT_NPROC,
    "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE,
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK,
}
"""Limits checked against a per-uid total that other sandboxes' usage counts in."""

PROC_SYS = Path("/proc/sys")


def raise_host_limits(proc_sys: Path = PROC_SYS) -> dict[str, int]:
    """Raise ``HOST_SYSCTLS`` and the server's own ``SHARED_RLIMITS`` (idempotent); returns
    the sysctls changed. Failures are logged, not fatal (a host that keeps its values keeps
    the starvation risk; the log says which)."""
    changed: dict[str, int] = {}
    for key, wanted in HOST_SYSCTLS.items():
        path = proc_sys / key
        try:
            current = int(path.read_text().split()[0])
            if current < wanted:
                path.write_text(str(wanted))
                changed[key] = wanted
        except (OSError, ValueError) as exc:
            log.warning("could not raise %s to %s: %s", key.replace("/", "."), wanted, exc)
    for name, which in SHARED_RLIMITS.items():
        try:
            resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the server's %s: %s", name, exc)
    if changed:
        log.info("raised host kernel limits: %s", changed)
    return changed


def sandbox_rlimits(nofile: int) -> list[dict[str, Any]]:
    """OCI ``process.rlimits``: NOFILE per process, and the shared per-uid ones at the
    server's hard limit (unlimited after :func:`raise_host_limits`; never above what runc
    may set)."""
    out = [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]
    for name, which in SHARED_RLIMITS.items():
        hard = resource.getrlimit(which)[1]
        value = 2**64 - 1 if hard == resource.RLIM_INFINITY else hard
        out.append({"type": name, "hard": value, "soft": value})
    return out
