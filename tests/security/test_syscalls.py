"""Seccomp is an allow-list: the kernel surface escapes use answers EPERM/ENOSYS (or kills
the caller, for the 32-bit ABIs), while what sandboxes are for keeps working
(``runtime/seccomp.py``, docs/security/seccomp-and-surface.md).

The attacks run as root and as ``user`` inside a sandbox through the unmodified SDK. The
host-side canary is the host itself: a successful ``unshare(CLONE_NEWUSER)`` would show a
user namespace of its own in the sandbox's ``/proc/self/ns/user``; a successful ``mount``
would change the sandbox's mount table; neither may differ from before the attack.
"""

from __future__ import annotations

import errno
import json
import signal
import uuid

import pytest
from e2b import Sandbox, Template

from tests.e2e.server import Server

PROBE = r"""
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(nr, *args):
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return 0 if libc.syscall(ctypes.c_long(nr), *conv) >= 0 else ctypes.get_errno()

def sock(family, kind=socket.SOCK_STREAM):
    try:
        socket.socket(family, kind).close()
        return 0
    except OSError as e:
        return e.errno

HIGH = 0xFFFFFFFF00000000   # the kernel ignores these bits of an int; seccomp sees them
userns_before = os.readlink("/proc/self/ns/user")
mounts_before = open("/proc/self/mountinfo").read()
out = {
    "unshare_user": call(272, 0x10000000),
    "unshare_user_high_bits": call(272, HIGH | 0x10000000),
    "unshare_net": call(272, 0x40000000),
    "unshare_mount": call(272, 0x00020000),
    "unshare_time": call(272, 0x00000080),
    "clone_newuser": call(56, 0x10000000 | 17, 0, 0, 0, 0),
    "clone3": call(435, None, 0),
    "setns": call(308, 0, 0),
    "io_uring_setup": call(425, 8, None),
    "bpf": call(321, 0, None, 0),
    "userfaultfd": call(323, 0),
    "perf_event_open": call(298, None, 0, -1, -1, 0),
    "keyctl": call(250, 0, 0),
    "add_key": call(248, b"user", b"sandlot", b"x", 1, -2),
    "request_key": call(249, b"user", b"sandlot", None, 0),
    "mount": call(165, b"none", b"/tmp", b"tmpfs", 0, None),
    "umount2": call(166, b"/proc", 2),
    "fsopen": call(430, b"tmpfs", 0),
    "open_tree": call(428, -100, b"/", 1),
    "kexec_load": call(246, 0, 0, None, 0),
    "kexec_file_load": call(320, -1, -1, 0, None, 0),
    "init_module": call(175, None, 0, b""),
    "syslog": call(103, 3, None, 0),
    "personality_no_aslr": call(135, 0x0040000),
    "personality_read_implies_exec": call(135, 0x0400000),
    "socket_vsock": sock(40),
    "socket_vsock_high_bits": call(41, HIGH | 40, 1, 0),
    "socketpair_vsock": call(53, 40, 1, 0, None),
    "socket_alg": sock(38, socket.SOCK_SEQPACKET),
    # allowed, next to the denials
    "getpid": call(39),
    "unshare_files": call(272, 0x400),
    "personality_query": call(135, 0xFFFFFFFF),
    "socket_inet": sock(socket.AF_INET),
    "socket_inet6": sock(socket.AF_INET6),
    "socket_unix": sock(socket.AF_UNIX),
    "socket_netlink": sock(socket.AF_NETLINK, socket.SOCK_RAW),
    "userns_unchanged": int(os.readlink("/proc/self/ns/user") != userns_before),
    "mounts_unchanged": int(open("/proc/self/mountinfo").read() != mounts_before),
}
print(json.dumps(out))
"""

EXPECTED = {
    "unshare_user": errno.EPERM, "unshare_user_high_bits": errno.EPERM, "unshare_net": errno.EPERM,
    "unshare_mount": errno.EPERM, "unshare_time": errno.EPERM, "clone_newuser": errno.EPERM,
    "clone3": errno.ENOSYS, "setns": errno.EPERM, "io_uring_setup": errno.EPERM, "bpf": errno.EPERM,
    "userfaultfd": errno.EPERM, "perf_event_open": errno.EPERM, "keyctl": errno.EPERM,
    "add_key": errno.EPERM, "request_key": errno.EPERM, "mount": errno.EPERM, "umount2": errno.EPERM,
    "fsopen": errno.EPERM, "open_tree": errno.EPERM, "kexec_load": errno.EPERM,
    "kexec_file_load": errno.EPERM, "init_module": errno.EPERM, "syslog": errno.EPERM,
    "personality_no_aslr": errno.ENOSYS, "personality_read_implies_exec": errno.ENOSYS,
    "socket_vsock": errno.EAFNOSUPPORT, "socket_vsock_high_bits": errno.EAFNOSUPPORT,
    "socketpair_vsock": errno.EAFNOSUPPORT, "socket_alg": errno.EAFNOSUPPORT,
    "getpid": 0, "unshare_files": 0, "personality_query": 0, "socket_inet": 0, "socket_inet6": 0,
    "socket_unix": 0, "socket_netlink": 0, "userns_unchanged": 0, "mounts_unchanged": 0,
}

# A 64-bit process entering the kernel through the i386 (int 0x80) and x32 ABIs: the
# filter knows only x86-64, so libseccomp kills the caller with SIGSYS.
COMPAT_PROBE = r"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# push rbx; mov eax, edi; mov ebx, esi; int 0x80; pop rbx; ret
code = bytes([0x53, 0x89, 0xF8, 0x89, 0xF3, 0xCD, 0x80, 0x5B, 0xC3])
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
int80 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_uint)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
pid = os.fork()
if pid == 0:
    if sys.argv[1] == "i386":
        int80(310, 0x10000000)             # i386 unshare(CLONE_NEWUSER)
    else:
        libc.syscall(ctypes.c_long(0x40000000 | 272), ctypes.c_long(0x10000000))   # x32 unshare
    os._exit(0)
print(os.waitpid(pid, 0)[1])
"""


def probe(sandbox: Sandbox, user: str) -> dict[str, int]:
    sandbox.files.write("/tmp/probe.py", PROBE)
    return json.loads(sandbox.commands.run("python3 /tmp/probe.py", user=user).stdout)


@pytest.mark.parametrize("user", ["root", "user"])
def test_denied_syscall_families(sandbox: Sandbox, user: str) -> None:
    """New namespaces, io_uring, BPF, userfaultfd, perf, the keyring, the mount API, kexec,
    modules, syslog, AF_VSOCK/AF_ALG sockets and odd personalities are refused, including
    with garbage in the upper half of an int argument; their neighbours are allowed."""
    assert probe(sandbox, user) == EXPECTED
    sandbox.commands.run("unshare --user --map-root-user true || echo refused > /tmp/u", user=user)
    assert sandbox.files.read("/tmp/u").strip() == "refused"


@pytest.mark.parametrize("abi", ["i386", "x32"])
def test_compat_syscall_abis_kill_the_caller(sandbox: Sandbox, abi: str) -> None:
    sandbox.files.write("/tmp/compat.py", COMPAT_PROBE)
    status = int(sandbox.commands.run(f"python3 /tmp/compat.py {abi}", user="root").stdout)
    assert status & 0x7F == signal.SIGSYS, status
    assert sandbox.commands.run("python3 -c 'print(7 * 6)'").stdout == "42\n"


def test_everyday_tools_work(sandbox: Sandbox) -> None:
    """sudo, threads, subprocesses, git, pip from the index, strace-free debugging aids."""
    out = sandbox.commands.run(
        "sudo -n true && python3 -c 'import subprocess, threading; t = threading.Thread(target=print); "
        "t.start(); t.join(); print(subprocess.run([\"echo\", \"ok\"], capture_output=True, text=True).stdout, end=\"\")'"
        " | tail -1").stdout
    assert out.strip() == "ok"
    git = sandbox.commands.run(
        "cd /tmp && rm -rf repo && git init -q repo && cd repo && echo hi > a && git add a && "
        "git -c user.email=a@b -c user.name=n commit -qm first && git log --oneline | wc -l")
    assert git.stdout.strip() == "1"
    pip = sandbox.commands.run(
        "python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -q --disable-pip-version-check six "
        "&& /tmp/venv/bin/python -c 'import six; print(six.__name__)'", timeout=180)
    assert pip.stdout.strip().splitlines()[-1] == "six"
    # asyncio, multiprocessing (semaphores, shared memory) and mmap
    mp = sandbox.commands.run(
        "python3 -c 'import asyncio, multiprocessing as m; asyncio.run(asyncio.sleep(0)); "
        "p = m.Pool(2); print(sum(p.map(abs, [-1, -2]))); p.close()'")
    assert mp.stdout.strip() == "3"


def test_filter_survives_pause_and_resume(server: Server) -> None:
    """CRIU restores the allow-list with the processes, not just *a* filter."""
    sbx = Sandbox.create(timeout=300)
    try:
        assert sbx.pause() is True
        same = Sandbox.connect(sbx.sandbox_id)
        assert "Seccomp:\t2" in same.commands.run("cat /proc/self/status").stdout
        assert probe(same, "root") == EXPECTED
    finally:
        sbx.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compilers_and_node_work(server: Server) -> None:
    """gcc builds and runs a program, strace traces it, node runs and npm initialises a
    project (npm itself from the npm registry: Debian's npm package pulls hundreds of
    packages)."""
    name = f"seccomp-tools-{uuid.uuid4().hex[:8]}"
    Template.build(Template().from_template("base").apt_install(["gcc", "libc6-dev", "nodejs", "strace"]), name,
                   cpu_count=1, memory_mb=1024)
    sbx = Sandbox.create(name, timeout=300)
    try:
        sbx.files.write("/tmp/hello.c", '#include <stdio.h>\nint main(void){puts("hello from gcc");return 0;}\n')
        assert sbx.commands.run("cd /tmp && gcc -O2 -pthread hello.c -o hello && ./hello").stdout == "hello from gcc\n"
        assert sbx.commands.run("node -e 'console.log(require(\"os\").cpus().length > 0)'").stdout == "true\n"
        # ptrace is allowed: strace follows a child through fork and exec
        traced = sbx.commands.run("strace -f -e trace=execve -o /tmp/trace sh -c /tmp/hello && grep -c execve /tmp/trace")
        assert traced.stdout.splitlines() == ["hello from gcc", "2"], traced.stdout
        npm = sbx.commands.run(
            "cd /tmp && curl -sfL https://registry.npmjs.org/npm/-/npm-9.9.4.tgz | tar xz && "
            "mkdir proj && cd proj && node /tmp/package/bin/npm-cli.js init -y >/dev/null && "
            "node -p 'require(\"./package.json\").name'", timeout=180)
        assert npm.stdout.strip() == "proj"
    finally:
        sbx.kill()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_headless_chromium_with_no_sandbox(server: Server) -> None:
    """Chromium runs under the filter with ``--no-sandbox`` (its own sandbox wants a user
    namespace, which stays closed), renders a page and runs its JavaScript."""
    name = f"seccomp-chromium-{uuid.uuid4().hex[:8]}"
    Template.build(Template().from_template("base").apt_install(["chromium"]), name, cpu_count=2, memory_mb=2048)
    sbx = Sandbox.create(name, timeout=300)
    try:
        page = "data:text/html,<p id=p></p><script>document.getElementById('p').textContent = 6 * 7</script>"
        dom = sbx.commands.run(f"chromium --headless --no-sandbox --disable-gpu --dump-dom \"{page}\" 2>/dev/null",
                               timeout=120)
        assert '<p id="p">42</p>' in dom.stdout, dom.stdout[-2000:]
    finally:
        sbx.kill()
