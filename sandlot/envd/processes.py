"""Process registry: spawning as a user, output fan-out with backpressure, exit bookkeeping.

Protocol-agnostic on purpose; ``process_service.py`` translates to/from the Connect messages.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import signal
import struct
import termios
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from . import reaper, spawn
from .users import User

READ_CHUNK = 32 * 1024
SUBSCRIBER_HIGH_WATER = 64  # queued chunks (≤32 KiB each) per subscriber before reading pauses
EXIT_DRAIN_GRACE = 1.0  # seconds to wait for pipe EOF after exit (grandchildren may hold it)
RETAIN_EXITED = 256  # how many finished processes Connect can still re-attach to
RETAIN_SECONDS = 600.0
USER_OOM_SCORE_ADJ = spawn.USER_OOM_SCORE_ADJ


class ProcessError(Exception):
    """A request-level failure; ``kind`` maps to a Connect code in the service."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Spec:
    cmd: str
    args: list[str]
    envs: dict[str, str]
    cwd: str
    user: User
    env: dict[str, str]  # the complete child environment
    tag: str | None = None
    stdin: bool = True
    pty_size: tuple[int, int] | None = None  # (cols, rows)


Stream = Literal["stdout", "stderr", "pty"]
"""Names of the output streams, as in envd's ``ProcessEvent.DataEvent.output`` oneof."""


@dataclass(frozen=True)
class Output:
    stream: Stream
    data: bytes


@dataclass(frozen=True)
class End:
    exit_code: int
    exited: bool
    status: str
    error: str | None
    deadline_exceeded: bool = False


Event = Output | End


@dataclass(eq=False)
class Subscriber:
    """One attached stream; its queue is drained by the RPC generator."""

    proc: ManagedProcess
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)

    async def get(self, timeout: float | None) -> Event | None:
        """Next event, or None on timeout (used for keepalives)."""
        if self.queue.empty():  # wait_for costs a task per call: only when there is a wait
            try:
                ev = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                return None
        else:
            ev = self.queue.get_nowait()
        self.proc._maybe_resume()
        return ev

    def close(self) -> None:
        self.proc.subscribers.discard(self)
        self.proc._maybe_resume()


def _end_from_status(status: int, deadline: bool) -> End:
    """Mirror Go's ProcessState: exit code, -1 on signal, status/error strings."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        text = f"exit status {code}"
        return End(code, True, text, text if code else None, deadline)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    name = (signal.strsignal(sig) or f"signal {sig}").lower() if sig else "unknown"
    text = f"signal: {name}"
    return End(-1, False, text, text, deadline)


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class ManagedProcess:
    def __init__(self, spec: Spec, on_finish: Callable[[ManagedProcess], None]) -> None:
        self.spec = spec
        self.subscribers: set[Subscriber] = set()
        self.end: End | None = None
        self._on_finish = on_finish
        self._loop = asyncio.get_running_loop()
        self._readers: dict[int, Stream] = {}  # fd -> stream name
        self._paused = False
        self._status: int | None = None
        self._deadline_hit = False
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._stdin_fd: int | None = None
        self._pty_fd: int | None = None
        self._write_lock = asyncio.Lock()
        self.finished = asyncio.Event()
        self.pid = self._spawn()

    # ---- spawning -------------------------------------------------------------------------
    def _spawn(self) -> int:
        spec = self.spec
        exe = spec.cmd
        if "/" not in exe:
            exe = shutil.which(exe, path=spec.env.get("PATH")) or exe
        argv = [spec.cmd, *spec.args]
        if spec.pty_size is not None:
            master, slave = os.openpty()
            try:
                _set_winsize(slave, *spec.pty_size)
                pid = spawn.spawn(exe, argv, spec.env, spec.cwd, spec.user, slave, slave, slave, ctty=True)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self._pty_fd = master
            self._readers[master] = "pty"
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            in_r, in_w = os.pipe2(os.O_CLOEXEC) if spec.stdin else (-1, -1)
            try:
                pid = spawn.spawn(exe, argv, spec.env, spec.cwd, spec.user,
                                  in_r if in_r >= 0 else None, out_w, err_w)
            except BaseException:
                for fd in (out_r, err_r, in_w):
                    if fd >= 0:
                        os.close(fd)
                raise
            finally:
                for fd in (out_w, err_w, in_r):
                    if fd >= 0:
                        os.close(fd)
            if in_w >= 0:
                self._stdin_fd = in_w
            self._readers[out_r] = "stdout"
            self._readers[err_r] = "stderr"
        reaper.watch(pid, self._on_exit)
        for fd in self._readers:
            self._loop.add_reader(fd, self._on_readable, fd)
        return pid

    # ---- output fan-out -------------------------------------------------------------------
    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except OSError:  # EIO on a pty master once the slave side is gone
            data = b""
        if not data:
            self._close_reader(fd)
            return
        ev = Output(self._readers[fd], data)
        for sub in self.subscribers:
            sub.queue.put_nowait(ev)
        if any(s.queue.qsize() >= SUBSCRIBER_HIGH_WATER for s in self.subscribers):
            self._pause()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._readers:
                self._loop.remove_reader(fd)

    def _maybe_resume(self) -> None:
        if self._paused and all(s.queue.qsize() < SUBSCRIBER_HIGH_WATER // 2 for s in self.subscribers):
            self._paused = False
            for fd in self._readers:
                self._loop.add_reader(fd, self._on_readable, fd)

    def _close_reader(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._readers.pop(fd, None)
        if fd == self._pty_fd:
            self._pty_fd = None
        os.close(fd)
        self._maybe_finish()

    # ---- exit -----------------------------------------------------------------------------
    def _on_exit(self, status: int) -> None:
        self._status = status
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        self._close_stdin_fd()
        if self._readers:
            self._loop.call_later(EXIT_DRAIN_GRACE, self._drain_deadline)
        self._maybe_finish()

    def _drain_deadline(self) -> None:
        if self.end is not None:
            return
        if self._paused:  # a slow reader, not a lingering grandchild: keep waiting
            self._loop.call_later(EXIT_DRAIN_GRACE, self._drain_deadline)
            return
        for fd in list(self._readers):
            self._close_reader(fd)

    def _maybe_finish(self) -> None:
        if self._status is None or self._readers or self.end is not None:
            return
        self.end = _end_from_status(self._status, self._deadline_hit)
        for sub in self.subscribers:
            sub.queue.put_nowait(self.end)
        self.finished.set()
        self._on_finish(self)

    # ---- control --------------------------------------------------------------------------
    def subscribe(self) -> Subscriber:
        sub = Subscriber(self)
        if self.end is not None:
            sub.queue.put_nowait(self.end)
        else:
            self.subscribers.add(sub)
        return sub

    def set_lifetime(self, seconds: float) -> None:
        """Kill the whole process group once ``seconds`` elapse (Connect-Timeout-Ms on Start)."""
        def expire() -> None:
            self._deadline_hit = True
            self.signal(signal.SIGKILL)
        self._deadline_handle = self._loop.call_later(max(seconds, 0.0), expire)

    def signal(self, sig: int) -> None:
        if self._status is not None:
            return
        try:
            os.killpg(self.pid, sig)  # setsid made pid the process-group id
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    async def write_stdin(self, data: bytes) -> None:
        if self.spec.pty_size is not None:
            raise ProcessError("invalid_argument", "tty assigned to process — input should be written to the pty")
        if self._stdin_fd is None:
            raise ProcessError("failed_precondition", "stdin not enabled or closed")
        await self._write(self._stdin_fd, data)

    async def write_pty(self, data: bytes) -> None:
        if self._pty_fd is None:
            raise ProcessError("invalid_argument", "no pty assigned to process")
        await self._write(self._pty_fd, data)

    async def _write(self, fd: int, data: bytes) -> None:
        async with self._write_lock:  # keeps StreamInput/SendInput ordering per process
            try:
                await asyncio.to_thread(_write_all, fd, data)
            except OSError as e:
                raise ProcessError("internal", f"error writing to process: {e}") from e

    def close_stdin(self) -> None:
        if self.spec.pty_size is not None:
            raise ProcessError("invalid_argument", "cannot close stdin of a pty process; send Ctrl+D (0x04) instead")
        self._close_stdin_fd()

    def _close_stdin_fd(self) -> None:
        if self._stdin_fd is not None:
            fd, self._stdin_fd = self._stdin_fd, None
            os.close(fd)

    def resize(self, cols: int, rows: int) -> None:
        if self._pty_fd is None:
            raise ProcessError("invalid_argument", "process has no pty")
        _set_winsize(self._pty_fd, cols, rows)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Registry:
    """Running processes plus a bounded memory of recently finished ones (for Connect)."""

    def __init__(self) -> None:
        self.running: dict[int, ManagedProcess] = {}
        self.exited: OrderedDict[int, tuple[float, ManagedProcess]] = OrderedDict()

    def start(self, spec: Spec) -> ManagedProcess:
        if spec.tag is not None and any(p.spec.tag == spec.tag for p in self.running.values()):
            raise ProcessError("already_exists", f"process with tag '{spec.tag}' already exists")
        try:
            proc = ManagedProcess(spec, self._finished)
        except FileNotFoundError as e:
            raise ProcessError("invalid_argument", f"error starting process: {e}") from e
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ENOMEM):  # fork() at the pids or memory limit
                raise ProcessError(
                    "resource_exhausted",
                    f"error starting process: the sandbox is out of processes or memory ({e}); "
                    "kill some of its processes (signals need no new process) and retry") from e
            raise ProcessError("internal", f"error starting process: {e}") from e
        if proc.end is None:
            self.running[proc.pid] = proc
        return proc

    def _finished(self, proc: ManagedProcess) -> None:
        self.running.pop(proc.pid, None)
        now = time.monotonic()
        self.exited[proc.pid] = (now, proc)
        while self.exited and (
            len(self.exited) > RETAIN_EXITED or next(iter(self.exited.values()))[0] < now - RETAIN_SECONDS
        ):
            self.exited.popitem(last=False)

    def find(self, pid: int | None = None, tag: str | None = None, include_exited: bool = False) -> ManagedProcess:
        if pid is not None:
            if pid in self.running:
                return self.running[pid]
            if include_exited and pid in self.exited:
                return self.exited[pid][1]
            raise ProcessError("not_found", f"process with pid {pid} not found")
        for proc in self.running.values():
            if proc.spec.tag == tag:
                return proc
        if include_exited:
            for _, proc in reversed(self.exited.values()):
                if proc.spec.tag == tag:
                    return proc
        raise ProcessError("not_found", f"process with tag {tag} not found")
