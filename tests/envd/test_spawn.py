"""envd's two spawn paths (static exec helper via posix_spawn, and the fork fallback) give a
child exactly the same setup, and the helper grants nothing to whoever else runs it."""

from __future__ import annotations

import os

import pytest

from sandlot.envd import spawn, users

from .conftest import _ensure_user, spawn_helper

PROBE = ("id -u; id -g; id -G; cat /proc/self/oom_score_adj; pwd; "
         "[ \"$(ps -o sid= -p $$ | tr -d ' ')\" = $$ ] && echo session-leader; "
         "ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; "
         "grep -E '^Sig(Ign|Blk)' /proc/self/status; echo \"$SPAWN_VAR\"")


@pytest.fixture(params=["helper", "fork"])
def path(request, monkeypatch) -> str:
    _ensure_user()
    helper = spawn_helper() if request.param == "helper" else None
    if request.param == "helper" and helper is None:
        pytest.skip("no C compiler to build the helper")
    monkeypatch.setattr(spawn, "_helper", helper)
    return request.param


GLIBC_RESERVED = (1 << 31) | (1 << 32)
"""Signals 32 and 33 in a SigIgn mask: a test run started through posix_spawn inherits them ignored."""


def _own_ignored() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split(":")[1], 16) for line in status if line.startswith("SigIgn:"))


def _run(argv: list[str], cwd: str, user: users.User, exe: str = "/bin/sh") -> tuple[int, str]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn.spawn(exe, argv, {"PATH": "/usr/bin:/bin", "SPAWN_VAR": "v"}, cwd, user, None, w, w)
    finally:
        os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode()


def test_child_setup_is_the_same_on_both_paths(path: str, tmp_path) -> None:
    user = users.lookup("user")
    os.chmod(tmp_path, 0o755)
    leak = os.open("/dev/null", os.O_RDONLY)  # inheritable: must still not reach the child
    os.set_inheritable(leak, True)
    try:
        code, out = _run(["sh", "-c", PROBE], str(tmp_path), user)
    finally:
        os.close(leak)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[:5] == [str(user.uid), str(user.gid), " ".join(map(str, user.groups)),
                         str(spawn.USER_OOM_SCORE_ADJ), str(tmp_path)]
    assert lines[5] == "session-leader"
    assert lines[6].split() == ["0", "1", "2", "3"]   # 3: ls's own directory fd
    masks = dict(line.split(":") for line in lines[7:9])
    assert int(masks["SigBlk"], 16) == 0   # nothing blocked, nothing ignored (CPython ignores
    ignored = int(masks["SigIgn"], 16)     # SIGPIPE/SIGXFSZ, glibc's posix_spawn 32 and 33)
    if path == "fork":   # Python can't touch glibc's reserved 32/33: the fallback keeps what envd has
        ignored &= ~(GLIBC_RESERVED & _own_ignored())
    assert ignored == 0
    assert lines[9] == "v"


def test_errors_are_those_of_popen(path: str) -> None:
    user = users.lookup("user")
    missing_exe, missing_dir = "/nonexistent-envd-spawn/nope", "/nonexistent-envd-spawn-dir"
    with pytest.raises(FileNotFoundError) as missing:
        _run(["nope"], "/", user, exe=missing_exe)
    assert missing.value.filename == missing_exe
    with pytest.raises(FileNotFoundError) as no_cwd:
        _run(["sh"], missing_dir, user)
    assert no_cwd.value.filename == missing_dir
    with pytest.raises(FileNotFoundError):
        _run(["sh"], "/bin", user, exe="sh")   # unresolved names are never run from the cwd


def test_helper_grants_nothing_to_other_callers(tmp_path) -> None:
    """Run as an ordinary user and told to become root, the helper runs the command as that
    user (it only drops ids when it already is root)."""
    _ensure_user()
    helper = spawn_helper()
    if helper is None:
        pytest.skip("no C compiler to build the helper")
    user = users.lookup("user")
    os.chmod(tmp_path, 0o755)
    argv = ["sh", "-c", f"exec 3>&1; {helper} - 0 0 0 / /usr/bin/id id -u; echo rc=$?"]
    code, out = _run(argv, str(tmp_path), user)
    assert code == 0
    assert out.split() == [str(user.uid), "rc=0"]
