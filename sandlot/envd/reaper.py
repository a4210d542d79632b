"""pid-1 child reaping: one SIGCHLD-driven ``waitpid(-1, WNOHANG)`` loop for every child.

All exit statuses flow through here (orphans included); tracked pids get their status dispatched
to a callback. Nothing else in envd may call wait*() on children, so there is no race.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

ExitCallback = Callable[[int], None]  # receives the raw wait status

_watchers: dict[int, ExitCallback] = {}


def watch(pid: int, callback: ExitCallback) -> None:
    """Call ``callback(status)`` once ``pid`` exits.

    Must be called from the loop thread right after spawning, before yielding: the SIGCHLD
    handler runs as a loop callback, so it cannot reap ``pid`` in between.
    """
    _watchers[pid] = callback


def reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        cb = _watchers.pop(pid, None)
        if cb is not None:  # untracked pids are orphans re-parented to pid 1: just reaped
            cb(status)


def _become_subreaper() -> None:
    """Outside a pid namespace (dev/tests), adopt orphans like pid 1 would."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Hook SIGCHLD into the loop; as pid 1 also shrug off SIGTERM/SIGINT/SIGHUP."""
    loop.add_signal_handler(signal.SIGCHLD, reap)
    if os.getpid() != 1:
        _become_subreaper()
    if os.getpid() == 1:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, lambda: None)
    reap()
