"""runc-backed runtime: one OCI container per sandbox.

Layout:
  ``<data_dir>/sandboxes/<id>/``  bundle dir: ``config.json``, ``rootfs/`` (overlay merged),
      ``disk/upper/`` + ``disk/work/`` (overlay; ``disk/`` is the loop-mounted ``disk.img``
      when the sandbox has a disk size, ``runtime/disk.py``), ``runtime.json`` (netns + ip,
      for restarts),
      ``envd.log`` (the container init's stdout/stderr), ``init.pid``
  ``<state_dir>/runc/``            runc ``--root``

Layers: ``containers.ContainerHost`` (runc calls, state files, teardown) ←
``checkpoint.Checkpointing`` (CRIU: pause, resume, snapshot, clone) ← ``RuncRuntime`` here
(set-up, create, kill, queries, egress): each module imports only the ones below it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sandlot import tenant_fs

from . import boot_id, cgroups, disk, host_limits, idmap, overlay, seccomp
from .base import SandboxHandle, SandboxRuntimeError, SandboxSpec, validate_sandbox_id
from .bundle import DEFAULT_CAPS, oci_config
from .checkpoint import SYSFS_DIR, Checkpointing, check_criu, criu_has_userns_patch, run_with_stdio
from .egress import EgressPolicy
from .idmap import IdRange
from .network import Network, NetSlot, host_nameservers, release_netns
from .usage import Usage, oom_killed, read_usage

log = logging.getLogger(__name__)

RUNC = "/usr/sbin/runc"
DEFAULT_CPU_SHARES = 1024   # cgroup v1's default weight
BACKGROUND_CPU_SHARES = 256   # a warm-pool boot: a quarter of a claimed sandbox's weight (yields, never starves)


def _has_cap(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


class RuncRuntime(Checkpointing):
    """Sandboxes as runc containers with overlay rootfs, pooled netns and v1 cgroups.

    Implements :class:`~sandlot.runtime.base.Runtime`."""

    name = "runc"

    def __init__(self, data_dir: Path | str, state_dir: Path | str = "/run/sandlot", *,
                 runc: str = RUNC, subnet: str = "10.213.0.0/16", pool_size: int = 4,
                 no_new_privileges: bool = False, nameservers: list[str] | None = None,
                 oom_score_adj: int = -900, net_prefix: str = "sl",
                 nft_table: str = "sandlot", cgroup_parent: str | None = None,
                 criu: str = "/usr/local/sbin/criu", seccomp_filter: bool = True,
                 userns: IdRange | None = idmap.DEFAULT_RANGE,
                 allow_private: tuple[str, ...] | list[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.sandboxes_dir = self.data_dir / "sandboxes"
        self.state_dir = Path(state_dir)
        self.runc_root = self.state_dir / "runc"
        self.runc = runc
        self.criu = criu
        self.criu_error: str | None = None   # set at start() when CRIU is missing/broken
        self.no_new_privileges = no_new_privileges
        self.seccomp_filter = seccomp_filter
        self.userns = userns
        """Id range of new sandboxes' user namespace (``None``: sandbox root is host root).
        Each sandbox records its own in ``runtime.json``, so one paused or snapshotted under
        another setting comes back as it was."""
        # one cgroup parent per instance (default: the nft table name, i.e. the instance)
        self.cgroup_parent = cgroup_parent or nft_table
        # Lowering oom_score_adj and raising RLIMIT_NOFILE past our hard limit need
        # CAP_SYS_RESOURCE, which some hosts (e.g. nested sandboxes) do not grant.
        self.has_sys_resource = _has_cap(24)
        if self.has_sys_resource:
            self.oom_score_adj: int | None = oom_score_adj
            self.nofile = 1048576
        else:
            own = int(Path("/proc/self/oom_score_adj").read_text())
            self.oom_score_adj = max(oom_score_adj, own)
            self.nofile = min(1048576, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            log.warning("no CAP_SYS_RESOURCE: sandbox oom_score_adj=%s (wanted %s), nofile=%s",
                        self.oom_score_adj, oom_score_adj, self.nofile)
        self.nameservers = nameservers if nameservers is not None else host_nameservers()
        # ``allow_private``: the operator's private CIDRs sandboxes may reach (read by start())
        self.network = Network(subnet=subnet, pool_size=pool_size, prefix=net_prefix, table=nft_table,
                               allow_private=tuple(allow_private))
        self.before_start: Callable[[], Awaitable[None]] | None = None
        """Awaited before runc starts or restores a container: makes the host mounts a container
        binds (lxcfs' views) usable first, so a dead lxcfs is repaired, not met by runc (ENOTCONN)."""
        self.last_timings: dict[str, dict[str, float]] = {}

    # --- lifecycle of the runtime ---------------------------------------------------------

    async def start(self) -> None:
        """Prepare the host: dirs, ip_forward, nft table, stale state cleanup, netns pool."""
        if self.seccomp_filter:   # a missing profile stops the server here, not every create
            seccomp.profile(DEFAULT_CAPS)
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        self.runc_root.mkdir(parents=True, exist_ok=True)
        try:
            log.info("CRIU %s at %s passes `criu check`", await check_criu(self.criu), self.criu)
            if self.userns is not None and not criu_has_userns_patch(self.criu):
                log.error("CRIU at %s lacks Sandlot's user-namespace patch: pause/resume, snapshots and "
                          "fork of sandboxes fail until scripts/install-criu.sh runs", self.criu)
        except SandboxRuntimeError as e:
            self.criu_error = str(e)
            log.error("pause/resume, snapshots and fork are unavailable: %s", e)
        await self.cleanup_stale()
        host_limits.raise_host_limits()   # before any sandbox inherits the server's rlimits
        # a host reboot took their netns; a paused sandbox resumes at its own IP
        await self.network.start(recreate=self._paused_without_netns())

    def _paused_without_netns(self) -> set[int]:
        """Slots of paused sandboxes whose netns is gone (``/run`` is emptied by a reboot)."""
        lost: set[int] = set()
        for sid in self.paused_ids():
            info = self._read_runtime_json(sid) or {}
            if "slot" in info and not Path(self.network.slot(info["slot"]).netns_path).exists():
                lost.add(int(info["slot"]))
        return lost

    async def close(self) -> None:
        """Undo host changes (nft table, ip_forward) and drop the idle netns pool.

        Running sandboxes are left running (a restarted server finds them through
        :meth:`list`); call :meth:`kill_all` first to stop them."""
        await self.network.close()
        cgroups.remove_parent_if_empty(self.cgroup_parent)

    async def kill_all(self) -> None:
        for h in await self.list():
            await self.kill(h.sandbox_id)

    async def cleanup_stale(self) -> list[str]:
        """Remove leftovers of a previous server: sandbox dirs whose container is gone,
        netns ``sl-*`` that no sandbox uses, cgroup dirs without container. Returns the
        sandbox ids cleaned."""
        cleaned: list[str] = []
        live = {h.sandbox_id for h in await self.list()}
        try:
            dirs = [e.name for e in os.scandir(self.sandboxes_dir) if e.is_dir()]
        except FileNotFoundError:
            dirs = []
        for sid in dirs:
            if sid not in live and not self._state_file(sid).exists() and not self.is_paused(sid):
                await self.kill(sid)
                cleaned.append(sid)
        used: set[str] = set()
        for sid in live | set(self.paused_ids()):   # paused sandboxes keep their netns
            info = self._read_runtime_json(sid)
            if info:
                used.add(info["netns"])
        for idx in self.network.existing_indexes():
            name = self.network.slot(idx).netns
            if name not in used and not self.network.is_reserved(idx):
                release_netns(name)
        for sid in cgroups.stale_ids(self.cgroup_parent):
            if sid not in live and not self._state_file(sid).exists():
                cgroups.remove(sid, parent=self.cgroup_parent)
        return cleaned

    def _etc_files(self, spec: SandboxSpec, slot: NetSlot) -> dict[str, str]:
        ns = "".join(f"nameserver {n}\n" for n in self.nameservers)
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{slot.sandbox_ip}\t{spec.hostname}\n")
        return {"resolv.conf": ns, "hosts": hosts, "hostname": spec.hostname + "\n"}

    @staticmethod
    def _own_runtime_files(upper: Path, rng: IdRange) -> None:
        """The upper dir (the merged ``/``) and the ``/etc`` files the runtime wrote belong
        to the sandbox's root, i.e. the range's base: a fresh tree only we have touched."""
        root = rng.to_host(0)
        os.chown(upper, root, root, follow_symlinks=False)
        etc = upper / "etc"
        if etc.is_dir() and not etc.is_symlink():
            os.chown(etc, root, root, follow_symlinks=False)
            for entry in os.scandir(etc):
                os.chown(entry.path, root, root, follow_symlinks=False)

    # --- create / kill --------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        sid = spec.sandbox_id
        validate_sandbox_id(sid)
        if self.before_start is not None:
            await self.before_start()
        sdir = self.sandbox_dir(sid)
        t = {"t0": time.perf_counter()}
        slot: NetSlot | None = None
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        if self._state_file(sid).exists():
            raise SandboxRuntimeError(f"container {sid} already exists")
        sdir.mkdir()   # FileExistsError if the sandbox exists: nothing to undo
        try:
            if self.userns is not None:
                self._check_traversable(self.userns)
            slot = await self.network.acquire()
            t["net"] = time.perf_counter()
            self._write_atomic(sdir / "runtime.json", json.dumps({
                "sandbox_id": sid, "runtime": self.name, "netns": slot.netns,
                "slot": slot.index, "ip": slot.sandbox_ip, "host_ip": slot.host_ip,
                "layers": [str(p) for p in spec.layers], "created_at": time.time(),
                "disk_mb": spec.disk_mb, "userns": self.userns.to_json() if self.userns else None}))
            fs = await disk.create(sdir, spec.disk_mb)
            t["disk"] = time.perf_counter()
            upper, work, rootfs = fs / "upper", fs / "work", sdir / "rootfs"
            for d in (upper, work, rootfs):
                d.mkdir()
            with tenant_fs.Tree(upper) as tree:   # the sandbox's tree: only through tenant_fs
                for name, content in self._etc_files(spec, slot).items():
                    tree.write_file(f"etc/{name}", content, 0o644, 0, 0)
            if self.userns is not None:
                self._own_runtime_files(upper, self.userns)
                await asyncio.to_thread(idmap.prepare_netns, slot.netns_path, sdir / SYSFS_DIR)
            overlay.mount_overlay([Path(p) for p in spec.layers], upper, work, rootfs, idmap=self.userns)
            t["overlay"] = time.perf_counter()
            boot_id.new_boot(sdir)
            spec = dataclasses.replace(spec, mounts=[*spec.mounts, boot_id.bind(sdir)])
            cfg = oci_config(spec, rootfs="rootfs", netns_path=slot.netns_path,
                             cgroups_path=cgroups.cgroups_path(sid, self.cgroup_parent),
                             no_new_privileges=self.no_new_privileges,
                             oom_score_adj=self.oom_score_adj, nofile=self.nofile,
                             seccomp_filter=self.seccomp_filter, userns=self.userns,
                             userns_sysfs=sdir / SYSFS_DIR)
            cfg.setdefault("annotations", {})["org.criu.config"] = str(self._criu_conf(sdir))
            (sdir / "config.json").write_text(json.dumps(cfg))
            # stdio are pipes (drained into envd.log) so CRIU can checkpoint the init
            rc, _ = await run_with_stdio([self.runc, "--root", str(self.runc_root), "create", "--bundle",
                                          str(sdir), "--pid-file", str(sdir / "init.pid"), sid],
                                         sdir / "envd.log")
            if rc != 0:
                raise SandboxRuntimeError(f"runc create failed (rc={rc}): {self._log_tail(sid)}")
            t["runc_create"] = time.perf_counter()
            if spec.background:   # a warm-pool boot yields the CPU to claimed sandboxes' requests
                cgroups.write("cpu", sid, "cpu.shares", str(BACKGROUND_CPU_SHARES), parent=self.cgroup_parent)
            self._install_boot_id(sid)
            await self._runc("start", sid)
            t["runc_start"] = time.perf_counter()
        except BaseException:
            await asyncio.shield(self._teardown(sid, slot))
            raise
        t0 = t.pop("t0")
        self.last_timings[sid] = {k: (v - t0) * 1000 for k, v in t.items()}
        log.debug("sandbox %s created in %.1f ms %s", sid, (t["runc_start"] - t0) * 1000,
                  self.last_timings[sid])
        return SandboxHandle(sid, slot.sandbox_ip)

    def foreground(self, sandbox_id: str) -> None:
        validate_sandbox_id(sandbox_id)
        cgroups.write("cpu", sandbox_id, "cpu.shares", str(DEFAULT_CPU_SHARES), parent=self.cgroup_parent)

    async def kill(self, sandbox_id: str) -> None:
        """Idempotent: container, cgroups, overlay mount, netns and sandbox dir all go."""
        validate_sandbox_id(sandbox_id)
        await self._teardown(sandbox_id, None)

    async def kill_keeping_upper(self, sandbox_id: str, dest: Path) -> None:
        """Kill the sandbox but first move its overlay upper dir to ``dest``: template
        builds keep each step's changes as a layer. A sandbox with a disk image (a build
        sandbox's disk limit) has its upper copied out of the image instead."""
        validate_sandbox_id(sandbox_id)
        state = self._read_state(sandbox_id) or {}
        await self._runc("kill", sandbox_id, "KILL", check=False)
        if state.get("init_process_pid"):
            await self._wait_exit(int(state["init_process_pid"]), state.get("init_process_start"))
        sdir = self.sandbox_dir(sandbox_id)
        in_image = disk.image_path(sdir).exists()
        for mp in sorted(overlay.mounts_under(sdir), key=len, reverse=True):
            if not (in_image and Path(mp) == disk.mount_path(sdir)):   # the image: after the copy
                overlay.umount(mp)
        rng = IdRange.from_json((self._read_runtime_json(sandbox_id) or {}).get("userns"))
        try:
            if in_image:
                upper = disk.mount_path(sdir) / "upper"
                await disk.copy_upper(upper, dest)
                st = upper.stat()   # the copy's top dir is new: give it the upper's owner and mode
                os.chown(dest, st.st_uid, st.st_gid)
                os.chmod(dest, st.st_mode & 0o7777)
            else:
                os.rename(disk.mount_path(sdir) / "upper", dest)
            if rng is not None:   # layers are 0-based on disk: shift the step's files back
                await asyncio.to_thread(idmap.unshift_tree, dest, rng)
        finally:
            await self._teardown(sandbox_id, None)

    # --- queries ------------------------------------------------------------------------

    async def list(self) -> list[SandboxHandle]:
        """Sandboxes whose container exists (running, created or stopped-not-deleted)."""
        out: list[SandboxHandle] = []
        try:
            entries = sorted(e.name for e in os.scandir(self.sandboxes_dir) if e.is_dir())
        except FileNotFoundError:
            return out
        for sid in entries:
            if not self._state_file(sid).exists():
                continue
            info = self._read_runtime_json(sid)
            if info and info.get("ip"):
                out.append(SandboxHandle(sid, info["ip"]))
        return out

    async def thaw_if_frozen(self, sandbox_id: str) -> bool:
        """Thaw a frozen container: a hot pause's resume, or one left frozen by a server killed
        between a snapshot's or fork's ``runc pause`` and its ``runc resume`` (bench/soak.py's
        ``kill -9``: it would never answer again, and every later snapshot would fail with
        "container not running"). What ``runc resume`` does (runc reads the paused state from
        the freezer), without a runc process; ``runc resume`` if the freezer can't be written."""
        state = cgroups.read("freezer", sandbox_id, "freezer.state", parent=self.cgroup_parent)
        if (state or "").strip() not in ("FROZEN", "FREEZING"):
            return False
        if not cgroups.write("freezer", sandbox_id, "freezer.state", "THAWED", parent=self.cgroup_parent):
            await self._runc("resume", sandbox_id, check=False)
        return True

    def oom_killed(self, sandbox_id: str) -> bool:
        return oom_killed(sandbox_id, self.cgroup_parent)

    def usage(self, sandbox_id: str) -> Usage | None:
        """cgroup counters and disk use of a running sandbox (``None`` if it is gone)."""
        sdir = self.sandbox_dir(sandbox_id)
        return read_usage(sandbox_id, self.cgroup_parent, disk.mount_path(sdir) / "upper", disk.usage(sdir))

    def init_pid(self, sandbox_id: str) -> int | None:
        state = self._read_state(sandbox_id)
        return int(state["init_process_pid"]) if state and state.get("init_process_pid") else None

    def memory_bytes(self, sandbox_id: str) -> int:
        """The sandbox's cgroup memory use (0 when unreadable: it is gone)."""
        value = cgroups.read("memory", sandbox_id, "memory.usage_in_bytes", parent=self.cgroup_parent)
        try:
            return int(value or 0)
        except ValueError:
            return 0

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.sandboxes_dir).free

    # --- network ------------------------------------------------------------------------

    @property
    def egress_rules(self) -> bool:
        return True   # nftables per slot (``network.Network``)

    async def set_egress(self, ip: str, policy: EgressPolicy) -> None:
        await self.network.set_policy(ip, policy)

    async def clear_egress(self, ip: str) -> None:
        await self.network.clear_policy(ip)
