"""PTY sessions through the SDK: a real terminal with job control, resize, signals, EOF."""

from __future__ import annotations

import threading
import time

import pytest
from e2b import CommandExitException
from e2b.sandbox.commands.command_handle import PtySize


class Term:
    """Collects PTY output on a thread so the test can wait for text to appear."""

    def __init__(self, sbx, **kw) -> None:
        self.sbx = sbx
        self.buf = b""
        self.lock = threading.Lock()
        self.handle = sbx.pty.create(PtySize(rows=kw.pop("rows", 24), cols=kw.pop("cols", 80)), **kw)
        self.result: list = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        def on_pty(data: bytes) -> None:
            with self.lock:
                self.buf += data
        try:
            self.result.append(self.handle.wait(on_pty=on_pty))
        except CommandExitException as e:
            self.result.append(e)

    def send(self, data: bytes) -> None:
        self.sbx.pty.send_stdin(self.handle.pid, data)

    def expect(self, text: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if text in self.buf:
                    out, self.buf = self.buf, self.buf[self.buf.index(text) + len(text):]
                    return out
            time.sleep(0.02)
        pytest.fail(f"{text!r} not seen in {self.buf[-500:]!r}")


def test_pty_is_a_real_terminal_with_resize(sbx):
    t = Term(sbx, rows=30, cols=100, envs={"PTYVAR": "pv"}, cwd="/tmp")
    t.send(b"tty; echo T=$TERM V=$PTYVAR; pwd; id -un; stty size; echo 'M'ARK1\n")
    out = t.expect(b"MARK1\r\n")
    assert b"/dev/pts/" in out and b"T=xterm-256color V=pv" in out and b"/tmp\r\n" in out
    assert b"user\r\n" in out and b"30 100\r\n" in out
    sbx.pty.resize(t.handle.pid, PtySize(rows=40, cols=120))
    t.send(b"stty size; echo 'M'ARK2\n")
    assert b"40 120\r\n" in t.expect(b"MARK2\r\n")
    t.send(b"exit 3\n")
    t.thread.join(5)
    assert isinstance(t.result[0], CommandExitException) and t.result[0].exit_code == 3


def test_pty_ctrl_c_interrupts_foreground_and_ctrl_d_exits(sbx):
    t = Term(sbx, user="root")
    t.send(b"echo 'R'EADY\n")
    t.expect(b"READY\r\n")
    t0 = time.monotonic()
    t.send(b"sleep 30; echo AFTER=$?\n")
    time.sleep(0.5)
    t.send(b"\x03")  # SIGINT to the foreground process group via the line discipline
    t.send(b"echo 'A'LIVE\n")
    t.expect(b"ALIVE\r\n")
    assert time.monotonic() - t0 < 10
    # EOF at an empty prompt ends the shell; a ^D that lands while readline is still switching
    # the terminal mode (a loaded machine) can be swallowed, so a person would press it again
    for _ in range(3):
        t.send(b"\x04")
        t.thread.join(5)
        if not t.thread.is_alive():
            break
    assert not t.thread.is_alive() and t.result[0].exit_code == 0


def test_pty_kill_and_errors(sbx):
    t = Term(sbx)
    t.send(b"echo 'U'P\n")
    t.expect(b"UP\r\n")
    with pytest.raises(Exception, match="tty assigned"):
        sbx.commands.send_stdin(t.handle.pid, "x")
    with pytest.raises(Exception, match="Ctrl"):
        sbx.commands.close_stdin(t.handle.pid)
    assert sbx.pty.kill(t.handle.pid) is True
    t.thread.join(5)
    assert t.result[0].exit_code == -1
    assert sbx.pty.kill(t.handle.pid) is False


async def test_async_pty(asbx):
    chunks: list[bytes] = []
    h = await asbx.pty.create(PtySize(rows=24, cols=80), on_data=chunks.append)
    await asbx.pty.send_stdin(h.pid, b"stty size; exit\n")
    r = await h.wait()
    assert r.exit_code == 0 and b"24 80" in b"".join(chunks)
