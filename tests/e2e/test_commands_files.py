"""Commands and files through the unmodified e2b SDK in a real sandbox."""

from __future__ import annotations

import pytest
from e2b import CommandExitException, Sandbox
from e2b.sandbox.filesystem.filesystem import FileType


def test_exit_codes_and_streams(sandbox: Sandbox) -> None:
    ok = sandbox.commands.run("echo out; echo err >&2")
    assert (ok.stdout, ok.stderr, ok.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitException) as failure:
        sandbox.commands.run("echo partial; exit 3")
    assert failure.value.exit_code == 3
    assert failure.value.stdout == "partial\n"


def test_envs_cwd_and_users(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("echo $GREETING", envs={"GREETING": "hola"}).stdout == "hola\n"
    assert sandbox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.commands.run("whoami").stdout == "user\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    assert sandbox.commands.run("echo $HOME", user="root").stdout == "/root\n"
    assert sandbox.commands.run("sudo -n whoami").stdout == "root\n"


def test_sandbox_env_vars_reach_commands(server: object) -> None:
    sbx = Sandbox.create(envs={"FROM_CREATE": "yes"})
    try:
        assert sbx.commands.run("echo $FROM_CREATE").stdout == "yes\n"
        assert sbx.commands.run("echo $FROM_CREATE", envs={"FROM_CREATE": "override"}).stdout == "override\n"
    finally:
        sbx.kill()


def test_background_command(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 30", background=True)
    assert handle.pid > 0
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        handle.wait()


def test_files_roundtrip(sandbox: Sandbox) -> None:
    files = sandbox.files
    info = files.write("/home/user/dir/one.txt", "1")
    assert info.path == "/home/user/dir/one.txt"
    files.write("dir/two.bin", b"\x00\x01\x02")
    assert files.read("dir/two.bin", format="bytes") == b"\x00\x01\x02"
    assert files.exists("dir/one.txt")
    assert not files.exists("dir/missing.txt")
    names = sorted(entry.name for entry in files.list("dir"))
    assert names == ["one.txt", "two.bin"]
    assert files.make_dir("dir/sub") is True
    assert files.make_dir("dir/sub") is False
    assert files.get_info("dir/sub").type == FileType.DIR
    moved = files.rename("dir/one.txt", "dir/sub/one.txt")
    assert moved.path == "/home/user/dir/sub/one.txt"
    assert files.read("dir/sub/one.txt") == "1"
    files.remove("dir/sub")
    assert not files.exists("dir/sub")
    # files written through the API belong to the default user
    assert sandbox.commands.run("stat -c %U /home/user/dir/two.bin").stdout == "user\n"
    # a large file streams both ways
    payload = bytes(range(256)) * 40_000  # ~10 MB
    files.write("big.bin", payload)
    assert files.read("big.bin", format="bytes") == payload


def test_missing_file_errors(sandbox: Sandbox) -> None:
    from e2b.exceptions import NotFoundException

    with pytest.raises(NotFoundException):
        sandbox.files.read("/definitely/not/here")
