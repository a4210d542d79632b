"""The sandboxes' seccomp filter: allow everything except the kernel surface a sandbox
never needs and container escapes keep using.

Modelled on Docker's default profile, written as a deny-list: Docker's capability set
already keeps most privileged calls out, so this closes what capabilities don't —
creating user namespaces (the door to in-sandbox CAP_SYS_ADMIN, mounts and much of the
kernel's attack surface), io_uring, BPF, perf events, userfaultfd and the kernel keyring
(which is not namespaced). ``clone3`` answers ENOSYS, as under Docker, because its flags
sit behind a pointer seccomp can't inspect; libc falls back to ``clone``.
"""
from __future__ import annotations

import errno

CLONE_NEWUSER = 0x10000000

DENIED = (
    # kernel and machine
    "acct", "create_module", "delete_module", "finit_module", "get_kernel_syms", "init_module",
    "kexec_file_load", "kexec_load", "query_module", "reboot", "swapoff", "swapon", "syslog",
    "uselib", "ustat", "vm86", "vm86old", "_sysctl", "sysfs", "nfsservctl", "lookup_dcookie",
    # clocks
    "clock_adjtime", "clock_settime", "settimeofday", "stime", "adjtimex",
    # mounts and namespaces (also need CAP_SYS_ADMIN, which sandboxes don't have)
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "setns", "open_by_handle_at", "name_to_handle_at",
    "quotactl", "quotactl_fd",
    # attack surface with a long CVE record
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "add_key", "keyctl", "request_key", "fanotify_init",
)


def profile() -> dict:
    """The ``linux.seccomp`` section of an OCI config."""
    new_user = [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
            {"names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
             "args": new_user},
        ],
    }
