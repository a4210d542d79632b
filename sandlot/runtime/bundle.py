"""OCI ``config.json`` generation (modelled on ``runc spec`` + Docker's defaults)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import host_limits, oom, seccomp
from .base import SandboxSpec
from . import idmap
from .idmap import IdRange

# Docker's default capability set
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# Docker's masks (an empty file or directory over each), then what else reads out the
# host's kernel, hardware or memory layout on a stock kernel: build and config (an exploit
# menu), the boot command line, mitigation status, physical addresses (vmcoreinfo, iomem,
# mtrr) and the allocator's state that heap grooming watches (slab, buddy, zone info)
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
    "/proc/sysrq-trigger", "/proc/kallsyms", "/proc/config.gz", "/proc/cmdline", "/proc/key-users",
    "/proc/slabinfo", "/proc/pagetypeinfo", "/proc/buddyinfo", "/proc/zoneinfo", "/proc/vmallocinfo",
    "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup", "/proc/iomem", "/proc/ioports",
    "/proc/mtrr", "/sys/kernel/vmcoreinfo", "/sys/kernel/notes", "/sys/kernel/boot_params",
    "/sys/kernel/slab", "/sys/kernel/debug", "/sys/kernel/tracing", "/sys/kernel/security",
    "/sys/devices/system/cpu/vulnerabilities", "/sys/devices/virtual/dmi", "/sys/hypervisor",
]
# as Docker; ``/sys`` and ``/sys/fs/cgroup`` are mounted read-only below
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"]

CPU_PERIOD_US = 100_000
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def oci_config(spec: SandboxSpec, *, rootfs: str, netns_path: str, cgroups_path: str,
               no_new_privileges: bool = False, oom_score_adj: int | None = -900,
               nofile: int = 65536, seccomp_filter: bool = True, userns: "IdRange | None" = None,
               userns_sysfs: Path | None = None) -> dict[str, Any]:
    """``userns``: the sandbox's id range; its ``/sys`` is then a bind of ``userns_sysfs``,
    a sysfs the host mounted for the sandbox's netns (``idmap.prepare_netns``)."""
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", spec.hostname)
    mem = int(spec.memory_mb) * 1024 * 1024
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    for m in spec.mounts:
        opts = ["rbind", "nosuid", "nodev"]
        opts.append("ro" if m.read_only else "rw")
        mounts.append({"destination": m.destination, "type": "bind",
                       "source": str(Path(m.source).resolve()), "options": opts})
    caps = list(DEFAULT_CAPS)
    cfg: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(spec.args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": host_limits.sandbox_rlimits(nofile),   # shared per-uid limits: see host_limits.py
            "noNewPrivileges": bool(no_new_privileges),
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": mem, "swap": mem},
                "cpu": {"quota": int(spec.cpu_count) * CPU_PERIOD_US, "period": CPU_PERIOD_US},
                "pids": {"limit": int(spec.pids_limit)},
            },
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": netns_path},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "cgroup"},   # /proc/self/cgroup and /sys/fs/cgroup start at its own cgroup
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if userns is not None:
        # root inside is ``userns.base`` outside (``runtime/idmap.py``); the netns stays the
        # init namespace's, joined by path, so the sandbox has no CAP_NET_* over it
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = userns.oci_mappings()
        cfg["linux"]["gidMappings"] = userns.oci_mappings()
        if userns_sysfs is None:
            raise ValueError("a user-namespaced sandbox needs the host-mounted sysfs of its netns")
        cfg["mounts"] = [idmap.sysfs_mount(userns_sysfs) if m["destination"] == "/sys" else m
                         for m in cfg["mounts"]]
    if seccomp_filter:
        cfg["linux"]["seccomp"] = seccomp.profile(caps)
    if oom_score_adj is not None:
        cfg["process"]["oomScoreAdj"] = oom.init_score_adj(oom_score_adj)  # docs/reliability.md
    return cfg
