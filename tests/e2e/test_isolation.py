"""A sandbox sees neither the host nor its neighbours, and its limits bite only itself."""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest
from e2b import CommandExitException, Sandbox

from tests.e2e.server import Server


def test_host_processes_and_files_are_invisible(sandbox: Sandbox, server: Server) -> None:
    ps = sandbox.commands.run("ps -eo comm --no-headers").stdout.split()
    assert "sandlot" not in ps and "pytest" not in ps
    assert len(ps) < 20, ps
    marker = f"/root/sandlot-host-marker-{os.getpid()}"
    with open(marker, "w") as handle:
        handle.write("host secret")
    try:
        listing = sandbox.commands.run("ls /root /var/lib || true", user="root").stdout
        assert "sandlot-host-marker" not in listing
        assert "sandlot" not in listing.split()
        found = sandbox.commands.run(f"test -e {marker} && echo yes || echo no", user="root").stdout
        assert found == "no\n"
    finally:
        os.unlink(marker)


def test_neighbours_are_invisible(server: Server) -> None:
    first, second = Sandbox.create(), Sandbox.create()
    try:
        first.files.write("secret.txt", "mine")
        assert not second.files.exists("secret.txt")
        out = second.commands.run("ls /home/user", user="root").stdout
        assert "secret.txt" not in out
        first_ip = first.commands.run("hostname -I").stdout.split()[0]
        with pytest.raises(CommandExitException):
            second.commands.run(f"curl -s -m 3 http://{first_ip}:49983/health", timeout=20)
    finally:
        first.kill()
        second.kill()


def test_host_services_are_unreachable(sandbox: Sandbox, server: Server) -> None:
    # The API port listens on 127.0.0.1 only; try the host side of the sandbox's link too.
    gateway = sandbox.commands.run("ip route show default | awk '{print $3}'").stdout.strip()
    assert gateway
    with pytest.raises(CommandExitException):
        sandbox.commands.run(f"curl -s -m 3 http://{gateway}:{server.port}/health", timeout=20)
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    try:
        port = listener.getsockname()[1]
        with pytest.raises(CommandExitException):
            sandbox.commands.run(f"curl -s -m 3 http://{gateway}:{port}/", timeout=20)
    finally:
        listener.close()


def test_memory_limit_kills_only_the_hog(server: Server) -> None:
    sbx = Sandbox.create()
    try:
        hog = "python3 -c \"b = bytearray(2 * 1024 ** 3); print('survived')\""
        with pytest.raises(CommandExitException) as killed:
            sbx.commands.run(hog, timeout=60)
        assert "survived" not in killed.value.stdout
        assert sbx.commands.run("echo still here").stdout == "still here\n"
        assert sbx.is_running()
    finally:
        sbx.kill()

SYSCALL_PROBE = r"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def errno_of(nr, *args):
    ctypes.set_errno(0)
    return 0 if libc.syscall(nr, *args) >= 0 else ctypes.get_errno()
print(json.dumps({
    "unshare_user": errno_of(272, 0x10000000),                          # unshare(CLONE_NEWUSER)
    "io_uring_setup": errno_of(425, 8, None),                           # EFAULT if it were allowed
    "add_key": errno_of(248, b"user", b"sandlot", b"x", 1, -2),
    "clone3": errno_of(435, None, 0),
    "getpid": errno_of(39),
}))
"""


def test_seccomp_closes_user_namespaces_and_risky_syscalls(sandbox: Sandbox) -> None:
    """Root in a sandbox can't make a user namespace (in-sandbox CAP_SYS_ADMIN) nor reach
    io_uring or the host-wide keyring; everyday tools keep working."""
    sandbox.files.write("/tmp/probe.py", SYSCALL_PROBE)
    for user in ("root", "user"):
        result = json.loads(sandbox.commands.run("python3 /tmp/probe.py", user=user).stdout)
        assert result == {"unshare_user": errno.EPERM, "io_uring_setup": errno.EPERM, "add_key": errno.EPERM,
                          "clone3": errno.ENOSYS, "getpid": 0}, (user, result)
    with pytest.raises(CommandExitException):
        sandbox.commands.run("unshare --user --map-root-user true")
    # fork/exec, threads, sudo and pipes are untouched
    assert sandbox.commands.run("sudo -n true && python3 -c 'import subprocess, threading; "
                                "t = threading.Thread(target=print); t.start(); t.join(); "
                                "print(subprocess.run([\"echo\", \"ok\"], capture_output=True, text=True).stdout, end=\"\")' | tail -1"
                                ).stdout.strip() == "ok"


def test_proc_shows_the_sandbox_not_the_host(sandbox: Sandbox) -> None:
    """free/top/psutil see the sandbox's memory limit and uptime (lxcfs), not the host's."""
    total_mb = int(sandbox.commands.run("free -m | awk '/^Mem:/ {print $2}'").stdout)
    limit_mb = int(sandbox.commands.run("cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout) // 2**20
    assert total_mb == limit_mb, (total_mb, limit_mb)
    host_total_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    assert total_mb < host_total_mb
    sandbox_uptime = float(sandbox.commands.run("cat /proc/uptime").stdout.split()[0])
    host_uptime = float(open("/proc/uptime").read().split()[0])
    assert sandbox_uptime < host_uptime - 60, (sandbox_uptime, host_uptime)
