"""``sandlot sandbox connect``: the local terminal wired to a shell on envd's PTY in a sandbox.

Uses the unmodified ``e2b`` SDK (``Sandbox.connect`` then ``pty.create``), so the bytes take
exactly the path a user's ``e2b sandbox connect`` takes: the front door, envd's Connect RPC
process service, a PTY in the sandbox. The local terminal is put in raw mode (keys, Ctrl-C
and escape sequences go to the sandbox's shell), resized with the window (SIGWINCH), and
restored however the session ends. Returns the shell's exit code.
"""

from __future__ import annotations

import os
import select
import signal
import termios
import threading
import tty
from typing import Any


def _size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.lines, size.columns
    except OSError:
        return 24, 80


def run_terminal(url: str, api_key: str, sandbox_id: str, *, user: str | None = None, cwd: str | None = None,
                 stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    from e2b import PtySize, Sandbox
    from e2b import CommandExitException

    sbx = Sandbox.connect(sandbox_id, api_key=api_key, api_url=url, sandbox_url=url)
    rows, cols = _size(stdout_fd)
    handle = sbx.pty.create(PtySize(rows=rows, cols=cols), user=user, cwd=cwd, timeout=0)
    done = threading.Event()
    exit_code = [0]

    def pump() -> None:
        try:
            def out(data: bytes) -> None:
                os.write(stdout_fd, data)

            result = handle.wait(on_pty=out)
            exit_code[0] = result.exit_code
        except CommandExitException as exc:
            exit_code[0] = exc.exit_code
        except Exception as exc:   # the stream broke (sandbox killed, server gone)
            os.write(stdout_fd, f"\r\nconnection lost: {exc}\r\n".encode())
            exit_code[0] = 1
        finally:
            done.set()

    threading.Thread(target=pump, daemon=True).start()
    interactive = os.isatty(stdin_fd)
    saved: Any = termios.tcgetattr(stdin_fd) if interactive else None
    previous = signal.getsignal(signal.SIGWINCH)

    def resized(_signum: int, _frame: object) -> None:
        rows, cols = _size(stdout_fd)
        try:
            sbx.pty.resize(handle.pid, PtySize(rows=rows, cols=cols))
        except Exception:
            pass

    signal.signal(signal.SIGWINCH, resized)
    try:
        if interactive:
            tty.setraw(stdin_fd, termios.TCSANOW)   # not TCSAFLUSH: keys typed already are kept
        while not done.is_set():
            ready, _, _ = select.select([stdin_fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(stdin_fd, 4096)
            if not data:   # local input ended: end the shell's input too
                sbx.pty.send_stdin(handle.pid, b"\x04")
                done.wait(10)
                break
            sbx.pty.send_stdin(handle.pid, data)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
    done.wait(5)
    return exit_code[0]
