"""A sandbox's /proc and /sys show it neither the host's kernel nor its neighbours, and
the host-global knobs there are read-only (``runtime/bundle.py``, ``runtime/lxcfs.py``,
docs/security/seccomp-and-surface.md).

Canaries: host-global sysctl and sysfs values the attack tries to change, the host's
kernel command line and build notes the masks hide, and the host's own names for the
sandbox (its id, the server's cgroup parent, the data directory) that must not show up
in the sandbox's cgroup and mount views.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from e2b import Sandbox

from tests.e2e.server import data_dir as default_data_dir
from tests.e2e.server import Server

MASKED = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/sysrq-trigger",
          "/proc/kallsyms", "/proc/config.gz", "/proc/cmdline", "/proc/slabinfo", "/proc/zoneinfo",
          "/proc/buddyinfo", "/proc/iomem", "/sys/kernel/vmcoreinfo", "/sys/kernel/notes",
          "/sys/firmware", "/sys/devices/virtual/powercap", "/sys/devices/system/cpu/vulnerabilities",
          "/sys/kernel/slab", "/sys/kernel/boot_params", "/proc/acpi", "/proc/scsi", "/proc/asound"]

READER = r"""
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            out[path] = "dir:" + ",".join(sorted(os.listdir(path)))
        else:
            with open(path, "rb") as f:
                out[path] = f.read(4096).decode("latin-1")
    except OSError as e:
        out[path] = "errno:%d" % e.errno
print(json.dumps(out))
"""

WRITER = r"""
import json, sys
out = {}
for path, value in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        with open(path, "w") as f:
            f.write(value)
        out[path] = "written"
    except OSError as e:
        out[path] = "errno:%d" % e.errno
print(json.dumps(out))
"""


def read_in(sandbox: Sandbox, *paths: str) -> dict[str, str]:
    sandbox.files.write("/tmp/reader.py", READER)
    return json.loads(sandbox.commands.run("python3 /tmp/reader.py " + " ".join(paths), user="root").stdout)


def write_in(sandbox: Sandbox, pairs: dict[str, str]) -> dict[str, str]:
    sandbox.files.write("/tmp/writer.py", WRITER)
    args = " ".join(f"{p} {v}" for p, v in pairs.items())
    return json.loads(sandbox.commands.run(f"python3 /tmp/writer.py {args}", user="root").stdout)


def test_masked_paths_read_empty(sandbox: Sandbox) -> None:
    """Docker's masks and the host-kernel leaks on top read as nothing, even for root."""
    seen = read_in(sandbox, *MASKED)
    for path, content in seen.items():
        assert content in ("", "dir:", "errno:2"), (path, content[:200])
    # the canaries: on the host these files do have content
    host_cmdline = Path("/proc/cmdline").read_text()
    assert host_cmdline.strip() and seen["/proc/cmdline"] == ""
    if Path("/sys/kernel/vmcoreinfo").exists():
        assert Path("/sys/kernel/vmcoreinfo").read_text().strip() and seen["/sys/kernel/vmcoreinfo"] == ""
    # ordinary /proc and /sys readers keep working
    assert sandbox.commands.run("ps -e --no-headers | wc -l && nproc && ls /sys/class/net").exit_code == 0


def test_host_global_knobs_are_read_only(sandbox: Sandbox) -> None:
    """Root in a sandbox can't retune the host kernel through /proc/sys or /sys."""
    knobs = {"/proc/sys/kernel/printk_ratelimit": None, "/sys/kernel/rcu_expedited": None}
    for path in knobs:
        knobs[path] = Path(path).read_text().strip()
    attack = {path: str(int(value) + 1 if path.startswith("/proc") else 1 - int(value))
              for path, value in knobs.items()}
    try:
        result = write_in(sandbox, attack)
        assert result == {path: "errno:30" for path in knobs}, result   # EROFS
        for path, before in knobs.items():
            assert Path(path).read_text().strip() == before, path
    finally:
        for path, before in knobs.items():
            if Path(path).read_text().strip() != before:
                Path(path).write_text(before)
    # the sandbox's own network sysctls are its business (netns-scoped); reads work
    assert read_in(sandbox, "/proc/sys/net/ipv4/ip_forward")["/proc/sys/net/ipv4/ip_forward"].strip() in ("0", "1")


def test_cgroup_view_is_the_sandbox_own(sandbox: Sandbox, server: Server) -> None:
    """A cgroup namespace: /proc/self/cgroup and /sys/fs/cgroup start at the sandbox's
    cgroup; the host's names for it (server instance, sandbox id) are nowhere to be seen;
    the limits are readable but read-only."""
    cgroup = sandbox.commands.run("cat /proc/self/cgroup").stdout
    lines = [line for line in cgroup.splitlines() if line]
    assert lines and all(line.split(":", 2)[2] == "/" for line in lines), cgroup
    assert server.instance not in cgroup and sandbox.sandbox_id not in cgroup
    limit = int(sandbox.commands.run("cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout)
    host_file = next(Path("/sys/fs/cgroup/memory").glob(f"*/{sandbox.sandbox_id}/memory.limit_in_bytes"))
    assert limit == int(host_file.read_text())
    assert write_in(sandbox, {"/sys/fs/cgroup/memory/memory.limit_in_bytes": str(limit * 4)}) == {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "errno:30"}
    assert int(host_file.read_text()) == limit
    subdirs = sandbox.commands.run("find /sys/fs/cgroup/memory -mindepth 1 -type d | wc -l").stdout
    assert subdirs.strip() == "0"


def test_lxcfs_views_are_read_only(sandbox: Sandbox) -> None:
    mounts = sandbox.commands.run("grep lxcfs /proc/self/mountinfo || true").stdout.splitlines()
    if not mounts:
        pytest.skip("lxcfs is not running on this host")
    assert all(" ro," in m or m.split()[5].startswith("ro") for m in mounts), mounts
    result = write_in(sandbox, {"/proc/meminfo": "x", "/proc/uptime": "1"})
    assert set(result.values()) <= {"errno:30", "errno:13", "errno:1"}, result
    assert "MemTotal" in read_in(sandbox, "/proc/meminfo")["/proc/meminfo"]


def test_mountinfo_shows_no_host_paths(sandbox: Sandbox, server: Server) -> None:
    """The sandbox's mount table names neither its id, nor the server instance, nor the
    host's data directory — overlay layers are handed to the kernel as ``/proc/self/fd/N``.
    Known and documented exceptions: a bind mount's root field is its source's path inside
    the host filesystem, so envd's read-only runtime at ``/.sandlot`` shows it, and so does
    the sandbox's own read-only boot-id directory (``/.sandlot-boot`` and the file bound over
    ``/proc/sys/kernel/random/boot_id``; ``runtime/boot_id.py``), which names the sandbox's id
    and the server instance: nothing the sandbox can use to reach any other path; and the CA
    bundle bound read-only over the system bundle (the host's bundle plus the egress proxy's
    public CA, a content-named file under ``<data>/egress-ca``; ``egress/ca.py``)."""
    data_dir = str(server.env().get("SANDLOT_DATA_DIR") or default_data_dir())
    info = sandbox.commands.run("cat /proc/self/mountinfo").stdout
    root = [line for line in info.splitlines() if line.split()[4] == "/"]
    assert len(root) == 1 and "lowerdir=/proc/self/fd/" in root[0], root
    leaks = [line for line in info.splitlines()
             if data_dir in line or sandbox.sandbox_id in line or server.instance in line]
    boot_dir = f"{data_dir}/runtime/{server.instance}/sandboxes/{sandbox.sandbox_id}/boot"
    allowed = {"/.sandlot": f"{data_dir}/envd/runtime", "/.sandlot-boot": boot_dir,
               "/proc/sys/kernel/random/boot_id": f"{boot_dir}/boot_id"}
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    assert {line.split()[4] for line in leaks} <= {*allowed, bundle}, leaks
    assert all(line.split()[5].startswith("ro") and (
        line.split()[3] == allowed[line.split()[4]] if line.split()[4] != bundle
        else re.fullmatch(re.escape(f"{data_dir}/egress-ca/bundle-") + "[0-9a-f]{16}[.]crt", line.split()[3]))
        for line in leaks), leaks
