"""process.Process through the real e2b SDK."""

from __future__ import annotations

import time

import pytest
from e2b import CommandExitException, TimeoutException
from e2b.sandbox.commands.command_handle import PtySize


def test_run_stdout_stderr_exit_code(sbx):
    r = sbx.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitException) as exc:
        sbx.commands.run("echo partial; exit 7")
    assert exc.value.exit_code == 7
    assert exc.value.stdout == "partial\n"


def test_env_cwd_and_users(sbx):
    r = sbx.commands.run('echo "$SBX_VAR $REQ_VAR $HOME $USER"; pwd; id -un', envs={"REQ_VAR": "req"})
    assert r.stdout.splitlines() == ["from-init req /home/user user", "/home/user", "user"]
    r = sbx.commands.run("pwd; id -un; echo $HOME", user="root", cwd="/tmp")
    assert r.stdout.splitlines() == ["/tmp", "root", "/root"]
    r = sbx.commands.run("pwd", user="root")  # defaultWorkdir is for the default user only
    assert r.stdout.strip() == "/root"
    # envd's own environment must not leak into children
    assert "PYTHONPATH" not in sbx.commands.run("env").stdout


def test_invalid_cwd_and_user(sbx):
    from e2b.exceptions import AuthenticationException, InvalidArgumentException

    with pytest.raises(InvalidArgumentException, match="does not exist"):
        sbx.commands.run("true", cwd="/nonexistent/dir")
    with pytest.raises(AuthenticationException, match="invalid username"):
        sbx.commands.run("true", user="nobody-here")


def test_background_list_kill(sbx):
    h = sbx.commands.run("sleep 60", background=True)
    assert h.pid in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as exc:
        h.wait()
    assert exc.value.exit_code == -1
    assert "killed" in (exc.value.error or "")
    assert h.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(h.pid) is False


def test_connect_by_pid_and_after_exit(sbx):
    h = sbx.commands.run("sleep 0.5; echo late", background=True)
    h.disconnect()  # client goes away; process must keep running
    again = sbx.commands.connect(h.pid)
    r = again.wait()
    assert r.stdout == "late\n"
    # re-attaching to a recently finished process yields its end event
    assert sbx.commands.connect(h.pid).wait().exit_code == 0


def test_stdin(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "hello\n")
    sbx.commands.close_stdin(h.pid)
    assert h.wait().stdout == "hello\n"


def test_timeout_kills_process(sbx):
    t0 = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30", timeout=1)
    assert time.monotonic() - t0 < 10
    # the client may give up a moment before envd's own deadline kills the process group
    for _ in range(50):
        if not [p for p in sbx.commands.list() if p.args[-1:] == ["sleep 30"]]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("process outlived its Connect-Timeout-Ms lifetime")


def test_large_output(sbx):
    r = sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' 'x'")
    assert len(r.stdout) == 3_000_000


def test_pty(sbx):
    out: list[bytes] = []
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(h.pid, b"stty size; exit\n")
    for _, _, chunk in h:
        if chunk:
            out.append(chunk)
    assert b"24 80" in b"".join(out)


def test_stream_input(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.stream_input(h.pid, iter(["a", b"b", "c\n"]))
    sbx.commands.close_stdin(h.pid)
    assert h.wait().stdout == "abc\n"


def _zombies_of(ppid: int) -> list[int]:
    import os

    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == ppid:
                out.append(int(d))
    return out


def test_orphans_are_reaped(sbx, envd):
    pid = int(sbx.commands.run("(sleep 1 >/dev/null 2>&1 & echo $!) ; (sleep 1 >/dev/null 2>&1 &) ; true").stdout)
    with open(f"/proc/{pid}/stat") as f:  # re-parented to envd (pid 1 / subreaper)
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == envd.proc.pid
    time.sleep(1.5)
    assert _zombies_of(envd.proc.pid) == []


def test_raw_stream_keepalive_and_end_envelope(envd):
    import base64
    import json
    import struct

    import httpx

    body = json.dumps({"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 1.5; echo done"]}, "stdin": False}).encode()
    headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
               "Keepalive-Ping-Interval": "1", "Authorization": "Basic " + base64.b64encode(b"root:").decode()}
    r = httpx.post(envd.url + "/process.Process/Start", content=b"\x00" + struct.pack(">I", len(body)) + body,
                   headers=headers, timeout=10)
    msgs, buf = [], r.content
    while buf:
        flags, n = buf[0], struct.unpack(">I", buf[1:5])[0]
        msgs.append((flags, json.loads(buf[5:5 + n])))
        buf = buf[5 + n:]
    kinds = [next(iter(m["event"])) if f == 0 else "END" for f, m in msgs]
    assert kinds[0] == "start" and "keepalive" in kinds and kinds[-2:] == ["end", "END"]
    assert msgs[-2][1]["event"]["end"] == {"exited": True, "status": "exit status 0"}
    assert msgs[-1] == (2, {})


def test_children_are_the_oom_killers_first_choice(sbx, envd):
    """A sandbox's own memory or fork bomb must kill the bomb, never envd (issue 12)."""
    from sandlot.envd.processes import USER_OOM_SCORE_ADJ

    own = open(f"/proc/{envd.proc.pid}/oom_score_adj").read().strip()
    assert int(own) < USER_OOM_SCORE_ADJ
    out = sbx.commands.run("cat /proc/self/oom_score_adj; sh -c 'cat /proc/self/oom_score_adj'").stdout.split()
    assert out == [str(USER_OOM_SCORE_ADJ)] * 2   # inherited by grandchildren too
