"""Start a child as a user: new session, OOM-first score, user's ids, cwd — then exec.

Every child needs that setup before it runs tenant code. Doing it in a ``fork()`` of envd
(``subprocess.Popen(preexec_fn=…)``) copies envd's page tables and takes ≈ 2.4 ms per spawn,
most of a ``commands.run``. So the setup lives in a tiny static exec helper
(``spawn_helper.c``, built into the envd runtime next to this module) started with
``os.posix_spawn`` — glibc's ``clone(CLONE_VM|CLONE_VFORK)``, no copy of anything — which
then execs the command. Without the helper (a dev checkout where nobody built it) the old
fork path does the same setup.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import termios

from .users import User

HELPER_NAME = "spawnhelper"
HELPER_ENV = "SANDLOT_ENVD_SPAWN_HELPER"
"""Overrides where the helper is (tests of a bare envd on the host point it at a fresh build)."""
USER_OOM_SCORE_ADJ = 1000
"""Every process envd starts (and so all their descendants) is the OOM killer's first choice,
far above envd itself (the container's value): a sandbox's own memory or fork bomb kills the
bomb, never its envd. Raising is always allowed; lowering below the container's value needs
CAP_SYS_RESOURCE, which sandboxes do not have (docs/reliability.md). The helper writes the
same number (``OOM_SCORE_ADJ`` in spawn_helper.c)."""
_ERR_FD = 3
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""Ignored by CPython at start-up; ignored signals survive exec, so reset them as Popen does."""


def find_helper() -> str | None:
    path = os.environ.get(HELPER_ENV) or os.path.join(os.path.dirname(os.path.abspath(__file__)), HELPER_NAME)
    return path if os.access(path, os.X_OK) else None


_helper = find_helper()
"""The helper this envd spawns through (None: the fork fallback)."""


def spawn(exe: str, argv: list[str], env: dict[str, str], cwd: str, user: User,
          stdin: int | None, stdout: int, stderr: int, ctty: bool = False) -> int:
    """Start ``exe`` with ``argv`` and return its pid; the caller owns reaping.

    ``stdin`` None means /dev/null. Raises OSError like ``Popen`` would (``FileNotFoundError``
    for a missing command or cwd, ``EAGAIN`` when no process can be made).
    """
    if "/" not in exe:  # what Popen does: search PATH, never the cwd
        raise FileNotFoundError(2, os.strerror(2), exe)
    if _helper is None:
        return _spawn_forked(exe, argv, env, cwd, user, stdin, stdout, stderr, ctty)
    return _spawn_helper(_helper, exe, argv, env, cwd, user, stdin, stdout, stderr, ctty)


def _above_stdio(fd: int, keep: list[int]) -> int:
    """posix_spawn's dup2 onto the same number keeps close-on-exec: never pass fds 0–3."""
    if fd > _ERR_FD:
        return fd
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _ERR_FD + 1)
    keep.append(high)
    return high


def _spawn_helper(helper: str, exe: str, argv: list[str], env: dict[str, str], cwd: str, user: User,
                  stdin: int | None, stdout: int, stderr: int, ctty: bool) -> int:
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    extra: list[int] = []
    try:
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
        if stdin is None:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, _above_stdio(stdin, extra), 0))
        actions.append((os.POSIX_SPAWN_DUP2, _above_stdio(stdout, extra), 1))
        actions.append((os.POSIX_SPAWN_DUP2, _above_stdio(stderr, extra), 2))
        actions.append((os.POSIX_SPAWN_DUP2, _above_stdio(err_w, extra), _ERR_FD))
        args = [helper, "t" if ctty else "-", str(user.uid), str(user.gid),
                ",".join(str(g) for g in user.groups), cwd, exe, *argv]
        pid = os.posix_spawn(helper, args, env, file_actions=actions,
                             setsigdef=_DEFAULT_SIGNALS, setsigmask=())
    finally:
        os.close(err_w)
        for fd in extra:
            os.close(fd)
    try:
        report = _read_to_eof(err_r)  # EOF = the command's exec closed the pipe
    finally:
        os.close(err_r)
    if report:
        # the helper exits 127 and is reaped as an untracked child
        stage, _, number = report.decode("ascii", "replace").strip().partition(" ")
        code = int(number) if number.isdigit() else 0
        raise OSError(code, os.strerror(code), {"exec": exe, "chdir": cwd}.get(stage))
    return pid


def _read_to_eof(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        if not chunk:
            return data
        data += chunk


def _child_setup(user: User, set_ctty: bool) -> None:
    """The fork fallback's preexec: new session, oom score, then drop to the user."""
    os.setsid()
    if set_ctty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:  # raising is allowed unprivileged, but do it before dropping root anyway
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        os.write(fd, b"%d" % USER_OOM_SCORE_ADJ)
        os.close(fd)
    except OSError:
        pass
    if os.geteuid() == 0:
        os.setgroups(list(user.groups))
        os.setgid(user.gid)
        os.setuid(user.uid)


def _spawn_forked(exe: str, argv: list[str], env: dict[str, str], cwd: str, user: User,
                  stdin: int | None, stdout: int, stderr: int, ctty: bool) -> int:
    popen = subprocess.Popen(
        argv, executable=exe, stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=stdout,
        stderr=stderr, cwd=cwd, env=env, close_fds=True, preexec_fn=lambda: _child_setup(user, ctty),
    )
    popen.returncode = 0  # the caller's reaper owns wait(): subprocess must never wait on it
    return popen.pid
