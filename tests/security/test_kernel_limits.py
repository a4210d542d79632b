"""Per-user kernel limits: one sandbox exhausting one must not break another sandbox or the host.

Sandbox A (the attacker, as root and as ``user``) takes each resource as far as the kernel
lets it, and holds it; meanwhile neighbour B — whose root and ``user`` are the same host
uids as A's when sandboxes have no user namespace — still watches a directory through envd
(``files.watch_dir``), opens files, forks, creates a message queue, queues a real-time
signal and runs commands, and the server keeps answering and creating sandboxes.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox

from sandlot import ids
from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"), pytest.mark.slow]

# Each exhauster takes one resource until the kernel refuses (or a cap well past the old
# shared host limit), prints "held <count> <errno or 'cap'>", then holds it until killed.
EXHAUST = textwrap.dedent(
    """
    import ctypes, errno, os, signal, subprocess, sys, threading, time
    what, cap = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:] != ["child"]:   # the launcher: returns once the child holds the resource
        child = subprocess.Popen([sys.executable, __file__, what, str(cap), "child"],
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
        print(child.stdout.readline().strip(), flush=True)
        os._exit(0)
    libc = ctypes.CDLL(None, use_errno=True)
    held, err = [], "cap"

    def fail():
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

    if what == "inotify-instances":
        while len(held) < cap:
            fd = libc.inotify_init1(0)
            if fd < 0:
                err = fail(); break
            held.append(fd)
    elif what == "inotify-watches":
        dirs = [f"/tmp/w{os.getuid()}-{i}" for i in range(3000)]   # few marks per inode: adding stays O(1)
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        instances = 0
        while instances < cap and err == "cap":
            fd = libc.inotify_init1(0)
            if fd < 0:
                err = fail(); break
            instances += 1
            for d in dirs:
                if libc.inotify_add_watch(fd, d.encode(), 0x100) < 0:   # IN_CREATE
                    err = fail(); break
                held.append(d)
    elif what == "files":
        try:
            while len(held) < cap:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            err = errno.errorcode[e.errno]
    elif what == "threads":
        stop = threading.Event()
        try:
            while len(held) < cap:
                t = threading.Thread(target=stop.wait, daemon=True); t.start(); held.append(t)
        except RuntimeError as e:
            err = "EAGAIN"
    elif what == "mqueues":
        class Attr(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long), ("cur", ctypes.c_long)]
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        rt.mq_open.restype = ctypes.c_int
        attr = Attr(0, 10, 8192, 0)
        while len(held) < cap:
            fd = rt.mq_open(f"/x{os.getpid()}-{len(held)}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr))
            if fd < 0:
                err = fail(); break
            held.append(fd)
    elif what == "signals":
        sig = signal.SIGRTMIN
        signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
        try:   # tgkill: a full queue is EAGAIN (kill() would silently drop the siginfo)
            while len(held) < cap:
                signal.pthread_kill(threading.get_ident(), sig); held.append(1)
        except OSError as e:
            err = errno.errorcode[e.errno]
    print("held", len(held), err, flush=True)   # watches: one entry per watch
    time.sleep(3600)
    """
)

# What a neighbour does; prints "ok" only if all of it worked.
NEIGHBOUR = textwrap.dedent(
    """
    import ctypes, os, signal, subprocess, threading
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0); assert fd >= 0, ctypes.get_errno()
    assert libc.inotify_add_watch(fd, b"/tmp", 0x100) >= 0, ctypes.get_errno()
    with open(f"/tmp/neighbour-{os.getuid()}.txt", "w") as f:
        f.write("x")
    assert subprocess.run(["true"]).returncode == 0
    class Attr(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long), ("cur", ctypes.c_long)]
    rt = ctypes.CDLL("librt.so.1", use_errno=True)
    q = rt.mq_open(f"/n{os.getpid()}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(Attr(0, 10, 8192, 0)))
    assert q >= 0, ctypes.get_errno()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
    signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)   # EAGAIN when the uid's queue is full
    print("ok")
    """
)

# resource -> cap: past the host's old shared limits (128 inotify instances for uid 0,
# ≈190 k watches, 819200 bytes of queues ≈ 9 queues, 96364 queued signals)
RESOURCES = {
    "inotify-instances": 20_000,
    "inotify-watches": 100,            # instances × 3000 directories = 300 000 watches per user
    "files": 600_000,                  # × 2 users: half of this host's old fs.file-max (memory-bound)
    "threads": 100_000,                # until the pids cgroup
    "mqueues": 1_000,                  # until the IPC namespace's queues_max (256)
    "signals": 120_000,
}


@pytest.fixture(scope="module")
def limits_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("sandlot-limits"), api_key=ids.new_api_key(),
                 instance=unique_instance("l"), subnet=unique_subnet(),
                 extra_env={"SANDLOT_WARM_POOL_SIZE": "0"})
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


def neighbour_works(b: Sandbox, server: Server) -> None:
    for user in ("root", "user"):
        assert b.commands.run("python3 /tmp/neighbour.py", user=user, timeout=60).stdout.strip() == "ok", user
    handle = b.files.watch_dir("/home/user")         # envd's own inotify, as E2B clients use it
    b.files.write("/home/user/seen.txt", "hi")
    events = []
    for _ in range(50):
        events = handle.get_new_events()
        if events:
            break
        b.commands.run("sleep 0.1")
    handle.stop()
    assert any(e.name == "seen.txt" for e in events), events
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


SHARED_POOL = {"mqueues": "Max msgqueue size", "signals": "Max pending signals"}
"""Per-uid rlimit pools: no starvation only where the server could raise them (CAP_SYS_RESOURCE)."""


@pytest.mark.parametrize("what", list(RESOURCES))
def test_one_sandbox_exhausting_a_kernel_limit_breaks_no_neighbour_nor_the_host(limits_server: Server, what: str) -> None:
    a = Sandbox.create(timeout=300)
    b = Sandbox.create(timeout=300)
    try:
        if what in SHARED_POOL:
            limits = a.commands.run("cat /proc/self/limits").stdout
            line = next(ln for ln in limits.splitlines() if ln.startswith(SHARED_POOL[what]))
            if "unlimited" not in line:
                pytest.skip(f"{what}: the server has no CAP_SYS_RESOURCE to lift the per-uid pool that sandboxes "
                            f"share ({line.split()[-3]}), so one sandbox can drain it: a known gap on such hosts "
                            "(docs/security/network-and-limits.md)")
        a.files.write("/tmp/exhaust.py", EXHAUST)
        b.files.write("/tmp/neighbour.py", NEIGHBOUR)
        held = []
        # threads: root alone takes the whole pids cgroup, after which A cannot even fork
        for user in ("root",) if what == "threads" else ("root", "user"):
            out = a.commands.run(f"python3 /tmp/exhaust.py {what} {RESOURCES[what]}", user=user, timeout=180).stdout
            assert out.startswith("held "), out
            held.append(f"{user}: {out.strip()}")
        print(what, held)   # the measurement: how far A got and why it stopped
        neighbour_works(b, limits_server)
        # the host: the API answers and a new sandbox starts and runs a command
        c = Sandbox.create(timeout=60)
        assert c.commands.run("echo fresh").stdout == "fresh\n"
        c.kill()
        if what != "threads":   # A itself is still usable once it lets go
            a.commands.run("pkill -f 'exhaust[.]py' || true", user="root")
            assert a.commands.run("echo a-alive").stdout == "a-alive\n"
    finally:
        a.kill()
        b.kill()
