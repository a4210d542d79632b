"""The sandboxes' seccomp filter: an allow-list, default-deny.

The list of allowed system calls is not ours: it is the containers ecosystem's maintained
default profile (Debian's ``golang-github-containers-common``,
``/usr/share/containers/seccomp.json``, the same calls Docker's default allows). We load
it, resolve its capability/architecture/kernel conditions for the capabilities a sandbox
gets and this host, and translate it to runc's ``linux.seccomp``. Anything not on the
list answers ENOSYS, so a program calling a syscall newer than the profile falls back
as on an older kernel.

That profile is written for rootless Podman, so it leaves ``mount``, ``unshare``,
``setns`` and ``keyctl`` to capabilities. Sandlot closes more on top — the kernel surface
a sandbox never needs and container escapes keep using: new namespaces (a user namespace
hands its creator CAP_SYS_ADMIN over a fresh set of kernel code), the mount API, io_uring,
BPF, perf events, userfaultfd, the kernel keyring (not namespaced), kexec, modules,
``syslog``, and socket families other than Unix, IPv4/6, netlink and packet (AF_VSOCK
reaches the machine's hypervisor). ``clone3`` answers ENOSYS, as under Docker, because its
flags sit behind a pointer seccomp can't inspect; libc falls back to ``clone``. Only the
native ABI is filtered-in: a process entering through i386's ``int 0x80`` or x32 is
killed (SIGSYS).

Argument filters only ever *allow* on an exact match (``clone`` without namespace flags,
``socket`` of a listed family): a deny-on-match rule can be dodged by setting the upper
32 bits of an ``int`` argument, which the kernel ignores and seccomp compares.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROFILE_PATH = Path("/usr/share/containers/seccomp.json")
PROFILE_PACKAGE = "golang-github-containers-common"

# moby's names for ``includes.arches`` (Go's GOARCH) and the libseccomp architecture
_MACHINES = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64")}

# what runc 1.1 understands in ``linux.seccomp.syscalls[].action``
_RUNC_ACTIONS = {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
                 "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG"}
_RUNC_OPS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ"}

CLONE_NEWTIME = 0x00000080   # unshare only: in clone's flags these bits are the exit signal
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NS_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
                  | CLONE_NEWPID | CLONE_NEWNET)

DENIED = (
    # machine and kernel
    "acct", "create_module", "delete_module", "finit_module", "get_kernel_syms", "init_module",
    "kexec_file_load", "kexec_load", "query_module", "reboot", "swapoff", "swapon", "syslog",
    "uselib", "ustat", "vm86", "vm86old", "_sysctl", "sysfs", "nfsservctl", "lookup_dcookie",
    "iopl", "ioperm", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
    # clocks
    "clock_settime", "clock_settime64", "settimeofday", "stime",
    # mounts and namespaces
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "setns", "open_by_handle_at", "name_to_handle_at",
    "quotactl", "quotactl_fd", "statmount", "listmount",
    # attack surface with a long CVE record
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "add_key", "keyctl", "request_key", "fanotify_init",
)
"""Answer EPERM whatever the profile says (and whatever capabilities a sandbox gets)."""

EXTRA_ALLOWED = ("futex_waitv", "fchmodat2", "cachestat", "map_shadow_stack",
                 "futex_wake", "futex_wait", "futex_requeue", "mseal")
"""Newer than the packaged profile and harmless (Docker's current profile allows them);
runc skips names its libseccomp doesn't know, and those answer ENOSYS."""

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET)
"""Everything else (AF_VSOCK, AF_ALG, AF_KEY, AF_RDS, AF_TIPC, Bluetooth, …) answers
EAFNOSUPPORT, the kernel's own answer for a family it doesn't have."""

_OVERRIDDEN = set(DENIED) | {"clone", "clone3", "unshare", "socket", "socketpair"}


class SeccompProfileError(RuntimeError):
    """The containers profile is missing or unreadable: sandboxes would run unfiltered."""


def host_machine() -> str:
    return platform.machine()


def load(path: Path | None = None) -> dict[str, Any]:
    path = path or PROFILE_PATH
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except FileNotFoundError:
        raise SeccompProfileError(
            f"seccomp profile {path} is missing: install Debian's {PROFILE_PACKAGE} "
            f"(`apt-get install {PROFILE_PACKAGE}`, done by `make setup`), or set "
            "SANDLOT_SECCOMP=false to run sandboxes without a syscall filter") from None
    except (OSError, ValueError) as e:
        raise SeccompProfileError(f"seccomp profile {path} is unreadable: {e}") from None


def _kernel() -> tuple[int, ...]:
    release = os.uname().release.split("-")[0]
    return tuple(int(p) for p in release.split(".")[:2] if p.isdigit())


def _applies(rule: dict[str, Any], caps: frozenset[str], goarch: str, kernel: tuple[int, ...]) -> bool:
    """moby's semantics: every ``includes`` condition must hold, no ``excludes`` one may."""
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps") and not all(c in caps for c in inc["caps"]):
        return False
    if exc.get("caps") and any(c in caps for c in exc["caps"]):
        return False
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    if exc.get("arches") and goarch in exc["arches"]:
        return False
    if inc.get("minKernel"):
        want = tuple(int(p) for p in str(inc["minKernel"]).split(".")[:2])
        if kernel < want:
            return False
    return True


def _rule(names: Iterable[str], action: str, *, errno_ret: int | None = None,
          args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"names": list(names), "action": action}
    if errno_ret is not None:
        out["errnoRet"] = errno_ret
    if args:
        out["args"] = args
    return out


def _arg(index: int, value: int, op: str = "SCMP_CMP_EQ", value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def _masked_eq(index: int, mask: int, value: int) -> dict[str, Any]:
    """``(arg & mask) == value``: runc passes ``value`` as libseccomp's mask, ``valueTwo``
    as the datum."""
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def translate(src: dict[str, Any], caps: Iterable[str], machine: str | None = None,
              kernel: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The containers/Docker profile ``src`` as runc's ``linux.seccomp`` for a process with
    ``caps`` on ``machine``, with Sandlot's denials on top."""
    machine = machine or host_machine()
    if machine not in _MACHINES:
        raise SeccompProfileError(f"no seccomp architecture mapping for {machine}")
    goarch, native = _MACHINES[machine]
    capset, kernel = frozenset(caps), kernel or _kernel()
    # the native ABI only: not the profile's ``archMap`` sub-architectures (i386 through
    # ``int 0x80``, x32), whose compat entry points keep yielding kernel bugs (CVE-2021-22555
    # was reached through compat setsockopt) and whose ``socketcall`` hides socket families
    # behind a pointer; libseccomp kills a process calling them (SIGSYS)
    arches = [native]

    rules: list[dict[str, Any]] = []
    for rule in src.get("syscalls") or []:
        if not _applies(rule, capset, goarch, kernel) or rule.get("action") not in _RUNC_ACTIONS:
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        names = [n for n in names if n not in _OVERRIDDEN]
        args = [_arg(a["index"], a["value"], a["op"], a.get("valueTwo", 0)) for a in rule.get("args") or []]
        if not names or any(a["op"] not in _RUNC_OPS for a in args):
            continue
        errno_ret = rule.get("errnoRet") if rule["action"] == "SCMP_ACT_ERRNO" else None
        rules.append(_rule(names, rule["action"], errno_ret=errno_ret, args=args))

    allowed = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}
    rules.append(_rule([n for n in EXTRA_ALLOWED if n not in allowed], "SCMP_ACT_ALLOW"))
    rules.append(_rule(DENIED, "SCMP_ACT_ERRNO", errno_ret=errno.EPERM))
    # processes and threads, but no new namespaces
    rules.append(_rule(["clone"], "SCMP_ACT_ALLOW", args=[_masked_eq(0, CLONE_NS_FLAGS, 0)]))
    rules.append(_rule(["unshare"], "SCMP_ACT_ALLOW", args=[_masked_eq(0, CLONE_NS_FLAGS | CLONE_NEWTIME, 0)]))
    for flag in (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                 CLONE_NEWNET):
        rules.append(_rule(["clone", "unshare"], "SCMP_ACT_ERRNO", errno_ret=errno.EPERM,
                           args=[_masked_eq(0, flag, flag)]))
    rules.append(_rule(["unshare"], "SCMP_ACT_ERRNO", errno_ret=errno.EPERM,
                       args=[_masked_eq(0, CLONE_NEWTIME, CLONE_NEWTIME)]))
    rules.append(_rule(["clone3"], "SCMP_ACT_ERRNO", errno_ret=errno.ENOSYS))
    # sockets of the families a sandbox uses; the rest as if the kernel had none
    for family in SOCKET_FAMILIES:
        rules.append(_rule(["socket", "socketpair"], "SCMP_ACT_ALLOW", args=[_arg(0, family)]))
    for family in range(max(SOCKET_FAMILIES)):
        if family not in SOCKET_FAMILIES:
            rules.append(_rule(["socket", "socketpair"], "SCMP_ACT_ERRNO", errno_ret=errno.EAFNOSUPPORT,
                               args=[_arg(0, family)]))
    rules.append(_rule(["socket", "socketpair"], "SCMP_ACT_ERRNO", errno_ret=errno.EAFNOSUPPORT,
                       args=[_arg(0, max(SOCKET_FAMILIES) + 1, "SCMP_CMP_GE")]))

    out = {"defaultAction": src.get("defaultAction", "SCMP_ACT_ERRNO"), "architectures": arches,
           "syscalls": rules}
    if out["defaultAction"] == "SCMP_ACT_ERRNO":
        out["defaultErrnoRet"] = int(src.get("defaultErrnoRet") or errno.ENOSYS)
    return out


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int, caps: tuple[str, ...], machine: str) -> str:
    return json.dumps(translate(load(path), caps, machine))


def profile(caps: Iterable[str], path: Path | None = None) -> dict[str, Any]:
    """The ``linux.seccomp`` section of an OCI config, translated once per profile file
    version and capability set. Raises :class:`SeccompProfileError` without the file."""
    path = path or PROFILE_PATH
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        load(path)   # raises the clear message
        raise
    section: dict[str, Any] = json.loads(_cached(path, mtime_ns, tuple(sorted(caps)), host_machine()))
    return section
