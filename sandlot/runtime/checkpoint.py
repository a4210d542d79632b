"""Checkpoint/restore of runc sandboxes with CRIU: pause, resume, snapshot, clone.

The middle layer of the runc runtime: :class:`Checkpointing` builds on the container
plumbing of :class:`~sandlot.runtime.containers.ContainerHost` (below it, so this module
never imports ``runc.py``) and :class:`~sandlot.runtime.runc.RuncRuntime` builds on it.
On-disk layout per sandbox dir:
  ``checkpoint.partial/``  a dump in progress (never trusted after a crash)
  ``checkpoint/``          the complete CRIU image of a paused sandbox
  ``paused.json``          written last, atomically: the sandbox is paused
                           (``{"memory": bool}``; ``false`` = filesystem-only pause)
The overlay ``disk/upper/`` dir *is* the filesystem state and is kept (with its disk image
mounted); the netns is kept too,
so the IP stays and ``lo`` stays up across restore (runc rejoins it by path).

A snapshot dir (``<snapshots_dir>/<snapshot_id>/``) holds ``image/`` (CRIU, leave-running
dump), ``upper/`` (copy taken while the sandbox was frozen) and ``snapshot.json`` (with the
disk size, so clones get a disk of the same size).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sandlot import tenant_fs

from . import boot_id, cgroups, criu_netlock, disk, idmap, log_drain, overlay, stopped_tasks
from .base import CriuUnavailable as CriuUnavailable   # (its old home: api/errors.py imports it here)
from .base import BindMount, PauseRecovery, SandboxHandle, SandboxRuntimeError, validate_sandbox_id
from .containers import ContainerHost
from .egress import EgressPolicy
from .idmap import IdRange
from .network import NetSlot

log = logging.getLogger(__name__)

CRIU_CONFIG_IN_PLACE = """\
# Written by Sandlot for pause/resume: the sandbox comes back in the same netns with the
# same IP, so established TCP connections (loopback ones between its own processes,
# and outside ones whose peer still has them) are restored as they were.
tcp-established
file-locks
"""
CRIU_CONFIG_COPY = """\
# Written by Sandlot for snapshots and forks: a copy lives in another netns with another
# IP, where connections to the old address can't exist: they are dumped as closed.
tcp-close
file-locks
"""
CRIU_CONFIG_FILE = "criu.conf"
"""Per sandbox (runc reads the path from the config's ``org.criu.config`` annotation), so
a snapshot can switch its own sandbox to ``CRIU_CONFIG_COPY`` for the length of a dump."""

MIN_CRIU = (4, 0)
SYSFS_DIR = "sys"
"""Per userns sandbox: the host-mounted sysfs of its netns, bound at ``/sys`` (``idmap.prepare_netns``)."""
USERNS_PATCH_MARK = b"sandlot: usernsd can't set TCP repair"
"""A string only a CRIU built with ``scripts/criu-userns-netns.py`` contains."""


@functools.lru_cache(maxsize=4)
def criu_has_userns_patch(criu: str) -> bool:
    """Whether ``criu`` can checkpoint a sandbox in a user namespace (stock CRIU 4.2 refuses
    one whose netns the init namespace owns): looked up once, in the binary itself."""
    try:
        return USERNS_PATCH_MARK in Path(criu).read_bytes()
    except OSError:
        return False


async def check_criu(criu: str) -> str:
    """``criu --version`` + ``criu check``; returns the version or raises with a clear message."""
    if not Path(criu).is_file():
        raise SandboxRuntimeError(
            f"CRIU not found at {criu}: pause/resume, snapshots and fork need CRIU 4.2.x "
            "(run scripts/install-criu.sh, or `make setup`)")
    proc = await asyncio.create_subprocess_exec(criu, "--version", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out = (await proc.communicate())[0].decode(errors="replace")
    version = out.split("Version:", 1)[-1].split()[0] if "Version:" in out else "?"
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    if major_minor < MIN_CRIU:
        raise SandboxRuntimeError(f"{criu} is CRIU {version}; CRIU >= 4.0 is needed on this kernel "
                                  "(run scripts/install-criu.sh)")
    proc = await asyncio.create_subprocess_exec(criu, "check", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out = (await proc.communicate())[0].decode(errors="replace")
    if proc.returncode != 0:
        raise SandboxRuntimeError(f"`{criu} check` failed: {out.strip()[-500:]}")
    return version


class InitStdio:
    """Pipes for the container init's stdio, so CRIU can dump and re-attach them.

    A host file or ``/dev/null`` as stdio cannot be checkpointed (CRIU cannot find its
    mount inside the container); pipes are external to CRIU and runc re-attaches new
    ones at restore. The read end of stdout/stderr is drained into ``envd.log`` by a
    detached ``log_drain`` (capped and rotated: the sandbox controls those bytes), which
    exits by itself when the container is gone."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.stdin_r, stdin_w = os.pipe()
        os.close(stdin_w)                        # envd never reads stdin: immediate EOF
        self.out_r, self.out_w = os.pipe()

    async def start_drain(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-S", "-I", log_drain.__file__, str(self.log_path), str(log_drain.MAX_BYTES),
            stdin=self.out_r, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)
        self.drain_pid = proc.pid
        os.close(self.out_r)

    def close(self) -> None:
        for fd in (self.stdin_r, self.out_w):
            try:
                os.close(fd)
            except OSError:
                pass


async def run_with_stdio(runc_args: list[str], log_path: Path) -> tuple[int, str]:
    """Run a runc command whose container init inherits fresh stdio pipes."""
    stdio = InitStdio(log_path)
    try:
        await stdio.start_drain()
        # stderr too: the init inherits it, so a captured pipe would never reach EOF
        proc = await asyncio.create_subprocess_exec(
            *runc_args, stdin=stdio.stdin_r, stdout=stdio.out_w, stderr=stdio.out_w)
        rc = await proc.wait()
        return rc or 0, "" if rc == 0 else _tail(log_path)
    finally:
        stdio.close()


def _tail(path: Path, n: int = 600) -> str:
    time.sleep(0.05)   # let the drain catch up with runc's last words
    try:
        return path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


class Checkpointing(ContainerHost):
    """Pause (CRIU dump, container released), resume (restore), snapshot and clone."""

    criu: str
    criu_error: str | None = None

    # --- helpers -----------------------------------------------------------------------

    def _criu_conf(self, sandbox_dir: Path, content: str = CRIU_CONFIG_IN_PLACE) -> Path:
        path = sandbox_dir / CRIU_CONFIG_FILE
        try:
            current = path.read_text()
        except OSError:
            current = None
        if current != content:
            self._write_atomic(path, content)
        return path

    def _require_criu(self, sandbox_id: str | None = None) -> None:
        if self.criu_error:
            raise CriuUnavailable(self.criu_error)
        if sandbox_id is not None and (self._read_runtime_json(sandbox_id) or {}).get("userns") \
                and not criu_has_userns_patch(self.criu):
            raise CriuUnavailable(
                f"CRIU at {self.criu} lacks Sandlot's user-namespace patch, so this sandbox (in a user "
                "namespace) can't be checkpointed or restored: run scripts/install-criu.sh (`make setup`)")

    async def _runc_criu(self, *args: str, log_path: Path | None = None, thaw: str | None = None) -> None:
        """runc with our CRIU binary; on failure the error carries the tail of CRIU's log.
        With ``log_path`` the (restored) init gets fresh stdio pipes drained there. ``thaw``: the
        frozen sandbox a dump is of, thawed if CRIU hangs attaching to a stopped task."""
        work = Path(args[args.index("--work-path") + 1])
        work.mkdir(parents=True, exist_ok=True)
        argv = [self.runc, "--root", str(self.runc_root), "--criu", self.criu, *args]
        if log_path is not None:
            rc, err_text = await run_with_stdio(argv, log_path)
        else:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            watch = None
            if thaw is not None:
                sid = thaw

                async def _thaw() -> None:
                    log.warning("CRIU hangs attaching to a stopped task of %s: thawing it", sid)
                    await self._runc("resume", sid, check=False)

                watch = asyncio.create_task(stopped_tasks.watch_attach(proc.pid, _thaw))
            try:
                _, err = await proc.communicate()
            finally:
                if watch is not None:
                    watch.cancel()
            thawed = watch is not None and watch.done() and not watch.cancelled() and watch.result()
            rc, err_text = proc.returncode or 0, err.decode(errors="replace").strip()
            if rc != 0 and thawed:
                raise SandboxRuntimeError(stopped_tasks.MESSAGE)
        if rc != 0:
            detail = err_text[-600:]
            for name in ("dump.log", "restore.log"):
                logf = work / name
                if logf.exists():
                    lines = [ln for ln in logf.read_text(errors="replace").splitlines() if "Error" in ln]
                    if lines:
                        detail += " | criu: " + " / ".join(lines[-4:])[-800:]
            raise SandboxRuntimeError(f"runc {args[0]} failed: {detail}")

    def is_paused(self, sandbox_id: str) -> bool:
        return (self.sandbox_dir(sandbox_id) / "paused.json").exists()

    def paused_ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.sandboxes_dir)
                          if e.is_dir() and (Path(e.path) / "paused.json").exists())
        except FileNotFoundError:
            return []

    async def _release_container(self, sid: str) -> None:
        """Container, cgroups and rootfs mount go; upper dir, netns and images stay."""
        state = self._read_state(sid)
        if state is not None or self._state_file(sid).parent.exists():
            if await self.is_alive(sid):   # (after a pause's dump its processes are gone already)
                await self._runc("kill", sid, "KILL", check=False)
                self._thaw_killed(sid)   # a hot-paused one's filesystem-only pause
                if state and state.get("init_process_pid"):
                    await self._wait_exit(int(state["init_process_pid"]), state.get("init_process_start"))
            await self._runc("delete", "-f", sid, check=False)
        overlay.umount(self.sandbox_dir(sid) / "rootfs")
        cgroups.remove(sid, parent=self.cgroup_parent)

    async def _mount_rootfs(self, sid: str) -> None:
        sdir = self.sandbox_dir(sid)
        info = self._read_runtime_json(sid) or {}
        if overlay.is_mountpoint(sdir / "rootfs"):
            return
        await disk.mount(sdir)   # after a host reboot the image is no longer mounted
        fs = disk.mount_path(sdir)
        work = fs / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        # sandboxes from before user namespaces have no "userns": their layers stay unmapped
        rng = IdRange.from_json(info.get("userns"))
        if rng is not None:   # the netns's sysfs and sysctls (gone after a host reboot)
            self._check_traversable(rng)
            await asyncio.to_thread(idmap.prepare_netns, self.network.slot(info["slot"]).netns_path,
                                    sdir / SYSFS_DIR)
        overlay.mount_overlay([Path(p) for p in info["layers"]], fs / "upper", work, sdir / "rootfs",
                              idmap=rng)

    # --- pause / resume ----------------------------------------------------------------

    async def pause(self, sandbox_id: str, *, memory: bool = True) -> dict[str, float]:
        """Checkpoint (``memory``) or just stop the sandbox, keeping its disk and netns.

        On failure the sandbox is left running (thawed) and the error is raised."""
        validate_sandbox_id(sandbox_id)
        sdir = self.sandbox_dir(sandbox_id)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if memory:
            self._require_criu(sandbox_id)
        # The marker is written before anything is frozen: once the container is released,
        # publishing it is a rename, which can't fail for lack of disk space.
        marker = sdir / "paused.json.tmp"
        try:
            marker.write_text(json.dumps({"memory": memory, "paused_at": time.time()}))
            if memory:
                await self._dump_for_pause(sandbox_id, timings, t0)
        except BaseException:
            marker.unlink(missing_ok=True)
            raise
        await self._release_container(sandbox_id)
        os.replace(marker, sdir / "paused.json")
        timings["total"] = (time.perf_counter() - t0) * 1000
        return timings

    async def _dump_for_pause(self, sandbox_id: str, timings: dict[str, float], t0: float) -> None:
        """Freeze and dump into ``checkpoint/``; on failure thaw the sandbox (or, when it was
        frozen already — a hot pause cooling down — leave it frozen) and raise."""
        sdir = self.sandbox_dir(sandbox_id)
        partial, final = sdir / "checkpoint.partial", sdir / "checkpoint"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        partial.mkdir()
        hot = self._frozen(sandbox_id)
        self._refuse_stopped_tasks(sandbox_id)
        await self._freeze(sandbox_id)
        timings["freeze"] = (time.perf_counter() - t0) * 1000
        try:
            await self._runc_criu("checkpoint", "--image-path", str(partial),
                                  "--work-path", str(sdir / "criu-work"), sandbox_id, thaw=sandbox_id)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            if await self.is_alive(sandbox_id):
                if hot:   # stays hot-paused (frozen again if CRIU's attach watch thawed it)
                    await asyncio.shield(self._freeze(sandbox_id))
                else:
                    await self._runc("resume", sandbox_id, check=False)
            raise
        timings["dump"] = (time.perf_counter() - t0) * 1000
        os.replace(partial, final)

    async def _freeze(self, sid: str, timeout_s: float = 2.0) -> None:
        """What ``runc pause`` does (runc reads a container's paused state from its freezer
        cgroup), without a runc process: ``FROZEN`` into the v1 freezer, then wait for the
        kernel to get every task there. ``runc pause`` when that does not happen in time."""
        if cgroups.write("freezer", sid, "freezer.state", "FROZEN", parent=self.cgroup_parent):
            deadline = time.monotonic() + timeout_s
            delay = 0.0005
            while time.monotonic() < deadline:
                if cgroups.read("freezer", sid, "freezer.state", parent=self.cgroup_parent) == "FROZEN":
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
        await self._runc("pause", sid)

    def _frozen(self, sid: str) -> bool:
        return cgroups.read("freezer", sid, "freezer.state", parent=self.cgroup_parent) == "FROZEN"

    async def hot_pause(self, sandbox_id: str) -> dict[str, float]:
        """Freeze every process of the sandbox, keeping the container (``Runtime.hot_pause``)."""
        validate_sandbox_id(sandbox_id)
        t0 = time.perf_counter()
        self._require_criu(sandbox_id)   # it must be able to cool down into a checkpoint
        if not await self.is_alive(sandbox_id):
            raise SandboxRuntimeError(f"container {sandbox_id} is not running")
        # a stopped task would hang the cool-down's CRIU attach: refused now, as a pause refuses it
        self._refuse_stopped_tasks(sandbox_id)
        await self._freeze(sandbox_id)
        return {"freeze": (time.perf_counter() - t0) * 1000, "total": (time.perf_counter() - t0) * 1000}

    def _refuse_stopped_tasks(self, sid: str) -> None:
        """Before freezing: a stopped task would hang CRIU's attach (``stopped_tasks``)."""
        if stopped_tasks.stopped_in(cgroups.controller_dir("freezer", sid, self.cgroup_parent)):
            raise SandboxRuntimeError(stopped_tasks.MESSAGE)

    async def resume(self, sandbox_id: str, *, memory: bool = True) -> SandboxHandle:
        """Restore a paused sandbox in place (same id, netns, IP, disk). ``memory=False``: boot it
        from its disk as a filesystem-only pause's resume does; a memory image is left in place
        until :meth:`finish_resume` (so a boot that fails leaves the sandbox paused as it was)."""
        validate_sandbox_id(sandbox_id)
        if self.before_start is not None:
            await self.before_start()
        sdir = self.sandbox_dir(sandbox_id)
        try:
            marker = json.loads((sdir / "paused.json").read_text())
        except (OSError, ValueError) as exc:
            raise SandboxRuntimeError(f"sandbox {sandbox_id} is not paused") from exc
        info = self._read_runtime_json(sandbox_id) or {}
        await self._mount_rootfs(sandbox_id)
        # a sandbox adopted from another host is in another netns, with another address
        self._criu_conf(sdir, CRIU_CONFIG_COPY if marker.get("adopted") else CRIU_CONFIG_IN_PLACE)
        restore = bool(marker.get("memory")) and memory
        try:
            if restore:
                self._require_criu(sandbox_id)
                await self._restore_in_place(sandbox_id)
            else:
                if marker.get("memory"):   # a memory image, booted past: its dump's network lock goes
                    await criu_netlock.lift(self._netns_path(info))
                await self._cold_start(sandbox_id)
        except BaseException:
            await asyncio.shield(self._release_container(sandbox_id))
            if marker.get("memory") and not restore:
                await asyncio.shield(criu_netlock.put_back(self._netns_path(info)))
            raise
        return SandboxHandle(sandbox_id, info["ip"], rebooted=not restore)

    def _netns_path(self, info: dict[str, Any]) -> str:
        return self.network.slot(int(info["slot"])).netns_path

    def finish_resume(self, sandbox_id: str) -> None:
        """The restored sandbox is healthy: drop the pause marker and its image."""
        sdir = self.sandbox_dir(sandbox_id)
        self._criu_conf(sdir)   # its next pause keeps its connections (an adopted one restored without)
        (sdir / "paused.json").unlink(missing_ok=True)
        shutil.rmtree(sdir / "checkpoint", ignore_errors=True)
        shutil.rmtree(sdir / "criu-work", ignore_errors=True)

    async def abort_resume(self, sandbox_id: str) -> None:
        """A restored sandbox never became healthy: release it again; it stays paused (with a
        memory image: its netns locked again, as the dump left it for the restore to lift)."""
        await self._release_container(sandbox_id)
        try:
            memory = json.loads((self.sandbox_dir(sandbox_id) / "paused.json").read_text()).get("memory")
        except (OSError, ValueError):
            return
        info = self._read_runtime_json(sandbox_id) or {}
        if memory and "slot" in info:
            await criu_netlock.put_back(self._netns_path(info))

    async def _restore_in_place(self, sid: str) -> None:
        """Restore a paused sandbox with its TCP connections; if CRIU can't, restore it
        with them closed rather than leave the sandbox unresumable."""
        sdir = self.sandbox_dir(sid)
        try:
            await self._restore(sid, sdir / "checkpoint")
            return
        except SandboxRuntimeError as exc:
            log.warning("restore of %s with its TCP connections failed, retrying with them closed: %s", sid, exc)
        await self._release_container(sid)
        await self._mount_rootfs(sid)
        self._criu_conf(sdir, CRIU_CONFIG_COPY)
        try:
            await self._restore(sid, sdir / "checkpoint")
        finally:
            self._criu_conf(sdir)

    async def _restore(self, sid: str, image: Path) -> None:
        sdir = self.sandbox_dir(sid)
        await self._runc_criu("restore", "-d", "--image-path", str(image), "--work-path",
                              str(sdir / "criu-work"), "--bundle", str(sdir), "--pid-file",
                              str(sdir / "init.pid"), sid, log_path=sdir / "envd.log")

    async def _cold_start(self, sid: str) -> None:
        """A boot from disk (a filesystem-only resume, a clone without memory): a new boot id."""
        sdir = self.sandbox_dir(sid)
        with_boot_id = boot_id.in_config(sdir / "config.json")
        if with_boot_id:
            boot_id.new_boot(sdir)
        rc, _ = await run_with_stdio([self.runc, "--root", str(self.runc_root), "create", "--bundle", str(sdir),
                                      "--pid-file", str(sdir / "init.pid"), sid], sdir / "envd.log")
        if rc != 0:
            raise SandboxRuntimeError(f"runc create failed (rc={rc}): {self._log_tail(sid)}")
        if with_boot_id:
            self._install_boot_id(sid)
        await self._runc("start", sid)

    def _install_boot_id(self, sid: str) -> None:
        """The created (not yet started) container's own boot id over the kernel's (``boot_id``)."""
        sdir = self.sandbox_dir(sid)
        try:
            pid = int((sdir / "init.pid").read_text().strip())
        except (OSError, ValueError) as exc:
            raise SandboxRuntimeError(f"container {sid} has no init pid after runc create") from exc
        boot_id.install(pid, sdir)

    async def recover_pause(self, sandbox_id: str) -> PauseRecovery:
        """Settle a pause/resume interrupted by a crash: ``running`` (with its address),
        ``paused`` or ``lost``."""
        sdir = self.sandbox_dir(sandbox_id)
        if await self.is_alive(sandbox_id):
            await self._runc("resume", sandbox_id, check=False)    # thaw a frozen half-dump
            shutil.rmtree(sdir / "checkpoint.partial", ignore_errors=True)
            if (sdir / "paused.json").exists():                  # a resume that finished restoring
                (sdir / "paused.json").unlink()
                shutil.rmtree(sdir / "checkpoint", ignore_errors=True)
            return PauseRecovery("running", (self._read_runtime_json(sandbox_id) or {}).get("ip"))
        if (sdir / "paused.json").exists():
            await self._release_container(sandbox_id)
            return PauseRecovery("paused")
        if (sdir / "checkpoint").is_dir():                       # dumped, crashed before the marker
            await self._release_container(sandbox_id)
            self._write_atomic(sdir / "paused.json", json.dumps({"memory": True, "paused_at": time.time()}))
            return PauseRecovery("paused")
        marker = sdir / "paused.json.tmp"
        try:
            filesystem_only = json.loads(marker.read_text()).get("memory") is False
        except (OSError, ValueError):
            filesystem_only = False
        if filesystem_only:                                       # stopped, crashed before the marker
            await self._release_container(sandbox_id)
            os.replace(marker, sdir / "paused.json")
            return PauseRecovery("paused")
        return PauseRecovery("lost")

    # --- snapshots and clones ------------------------------------------------------------

    async def snapshot(self, sandbox_id: str, dest: Path, *, memory: bool = True) -> None:
        """Dump a running sandbox (leave-running) and copy its disk into ``dest``."""
        validate_sandbox_id(sandbox_id)
        if memory:
            self._require_criu(sandbox_id)
        sdir = self.sandbox_dir(sandbox_id)
        dest.mkdir(parents=True)
        try:
            rng = IdRange.from_json((self._read_runtime_json(sandbox_id) or {}).get("userns"))
            if memory and rng is not None:
                # runc would make it 0600; CRIU's restored tasks (the range's root) open
                # their images in it: searchable by the range's group only
                (dest / "image").mkdir()
                idmap.open_dir_to_range(dest / "image", rng)
            if memory:
                self._refuse_stopped_tasks(sandbox_id)
            await self._runc("pause", sandbox_id)
            try:
                # the disk copy is taken while frozen so it matches the memory image
                await disk.copy_upper(disk.mount_path(sdir) / "upper", dest / "upper")
                if memory:
                    self._criu_conf(sdir, CRIU_CONFIG_COPY)
                    try:
                        await self._runc_criu("checkpoint", "--leave-running", "--image-path", str(dest / "image"),
                                              "--work-path", str(dest / "criu-work"), sandbox_id, thaw=sandbox_id)
                    finally:
                        self._criu_conf(sdir)
            finally:
                await self._runc("resume", sandbox_id, check=False)
            shutil.copy2(sdir / "config.json", dest / "config.json")
            if boot_id.path(sdir).exists():   # a memory clone is the same boot carried on
                shutil.copy2(boot_id.path(sdir), dest / boot_id.FILE)
            info = self._read_runtime_json(sandbox_id) or {}
            self._write_atomic(dest / "snapshot.json", json.dumps(
                {"source": sandbox_id, "layers": info.get("layers", []), "memory": memory,
                 "disk_mb": info.get("disk_mb")}))
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    @staticmethod
    def _write_clone_hosts(upper: Path, ip: str, hostname: str) -> None:
        """The clone's own ``/etc/hosts`` in its copied upper dir, which the tenant shaped:
        written through :mod:`sandlot.tenant_fs` (a symlinked ``/etc`` or ``hosts`` resolves
        inside the copy or is replaced, never followed onto the host). If the tenant made
        ``/etc`` unusable (a whiteout, a loop) the clone keeps what they left."""
        content = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                   f"{ip}\t{hostname}\n")
        try:
            with tenant_fs.Tree(upper) as tree:
                tree.write_file("etc/hosts", content, 0o644, 0, 0)
        except (OSError, tenant_fs.TreeError) as exc:
            log.warning("clone: /etc/hosts not written (the snapshot's /etc is unusual): %s", exc)

    @staticmethod
    def _own_clone_hosts(upper: Path, rng: IdRange) -> None:
        """The clone's fresh ``/etc/hosts`` belongs to the sandbox's root (the range's base)."""
        try:
            with tenant_fs.Tree(upper) as tree:
                tree.set_attrs("etc/hosts", uid=rng.to_host(0), gid=rng.to_host(0))
        except (OSError, tenant_fs.TreeError) as exc:
            log.warning("clone: /etc/hosts not re-owned: %s", exc)

    def _retarget_config(self, cfg: dict[str, Any], sandbox_id: str, slot: NetSlot, rng: IdRange | None,
                         boot_source: Path) -> None:
        """Another sandbox's OCI config made this one's (its cgroup, netns, sysfs, boot dir),
        written to its dir. Its CRIU config is the copy one (the snapshot's names its source
        sandbox's): the image was dumped with its connections closed, which restore must repeat."""
        sdir = self.sandbox_dir(sandbox_id)
        cfg["linux"]["cgroupsPath"] = cgroups.cgroups_path(sandbox_id, self.cgroup_parent)
        cfg.setdefault("annotations", {})["org.criu.config"] = str(self._criu_conf(sdir, CRIU_CONFIG_COPY))
        for ns in cfg["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = slot.netns_path
        if rng is not None:   # its own netns's sysfs, not the source sandbox's
            cfg["mounts"] = [idmap.sysfs_mount(sdir / SYSFS_DIR) if m["destination"] == "/sys" else m
                             for m in cfg["mounts"]]
        boot_id.retarget(cfg, sdir)   # its own boot dir, not the source sandbox's
        if (boot_source / boot_id.FILE).exists():
            boot_id.copy_boot(boot_source, sdir)
        elif boot_id.has_mount(cfg):   # its source's file went missing: the mount needs one
            boot_id.new_boot(sdir)
        (sdir / "config.json").write_text(json.dumps(cfg))

    # --- moving a paused sandbox to another host (sandlot/orchestrator/adoption.py) -----------

    EXPORT_FILES = ("runtime.json", "paused.json", "config.json")

    def export_paused(self, sandbox_id: str) -> list[tuple[Path, list[str]]]:
        """The pause's files (its memory image when it has one), its boot id and its disk's
        upper dir: the paused sandbox is released, so none of them changes while packed."""
        validate_sandbox_id(sandbox_id)
        sdir = self.sandbox_dir(sandbox_id)
        if not (sdir / "paused.json").exists():
            raise SandboxRuntimeError(f"sandbox {sandbox_id} is not paused")
        names = list(self.EXPORT_FILES)
        if (sdir / "checkpoint").is_dir() and json.loads((sdir / "paused.json").read_text()).get("memory"):
            names.append("checkpoint")
        if boot_id.path(sdir).exists():
            names.append(boot_id.BOOT_DIR)
        return [(sdir, names), (disk.mount_path(sdir), ["upper"])]

    async def adopt_paused(self, bundle: Path, sandbox_id: str, layers: list[Path], *,
                           mounts: list[BindMount] | None = None,
                           egress: EgressPolicy | None = None) -> None:
        """A paused sandbox of this host from another host's :meth:`export_paused` tree: a new
        slot (address; ``egress`` in force first), a disk holding the upper dir, the config
        retargeted as a clone's, the memory image as ``checkpoint/`` and CRIU's network lock in
        the new netns as the dump left it in the old one, so :meth:`resume` works as for any pause."""
        validate_sandbox_id(sandbox_id)
        old = json.loads((bundle / "runtime.json").read_text())
        marker = json.loads((bundle / "paused.json").read_text())
        cfg = json.loads((bundle / "config.json").read_text())
        # the source host's bind sources (envd runtime, CA bundle, lxcfs views) are this host's own
        sources = {m.destination: str(m.source) for m in mounts or []}
        for entry in cfg.get("mounts", []):
            if entry.get("destination") in sources and {entry.get("type"), *entry.get("options", [])} & {"bind", "rbind"}:
                entry["source"] = sources[entry["destination"]]
        memory = bool(marker.get("memory")) and (bundle / "checkpoint").is_dir()
        if memory:
            self._require_criu(sandbox_id)
        rng = IdRange.from_oci(cfg)   # the source's: its upper holds ids of that range
        if rng is not None:
            self._check_traversable(rng)
        sdir = self.sandbox_dir(sandbox_id)
        sdir.mkdir()
        slot: NetSlot | None = None
        try:
            slot = await self.network.acquire()
            if egress is not None:
                await self.network.set_policy(slot.sandbox_ip, egress)
            self._write_atomic(sdir / "runtime.json", json.dumps({
                "sandbox_id": sandbox_id, "runtime": self.name, "netns": slot.netns,
                "slot": slot.index, "ip": slot.sandbox_ip, "host_ip": slot.host_ip,
                "layers": [str(p) for p in layers], "created_at": old.get("created_at", time.time()),
                "disk_mb": old.get("disk_mb"), "userns": rng.to_json() if rng else None,
                "adopted_from": {"ip": old.get("ip")}}))
            fs = await disk.create(sdir, old.get("disk_mb"))
            await disk.copy_upper(bundle / "upper", fs / "upper")
            self._write_clone_hosts(fs / "upper", slot.sandbox_ip, str(cfg.get("hostname") or "e2b"))
            if rng is not None:
                self._own_clone_hosts(fs / "upper", rng)
            (sdir / "rootfs").mkdir()
            self._retarget_config(cfg, sandbox_id, slot, rng, bundle / boot_id.BOOT_DIR)
            if memory:
                shutil.move(bundle / "checkpoint", sdir / "checkpoint")
                await criu_netlock.put_back(slot.netns_path)
            self._write_atomic(sdir / "paused.json", json.dumps(
                {"memory": memory, "paused_at": marker.get("paused_at", time.time()), "adopted": True}))
        except BaseException:
            await asyncio.shield(self._teardown(sandbox_id, slot))
            raise

    async def clone(self, snapshot: Path, sandbox_id: str, *,
                    egress: EgressPolicy | None = None) -> SandboxHandle:
        """Start a new sandbox from a snapshot: copy of its disk, new netns and IP, restored memory.
        ``egress`` is in force on the new slot before any restored process runs. The clone
        keeps its source's hostname (restored processes already know it)."""
        validate_sandbox_id(sandbox_id)
        if self.before_start is not None:
            await self.before_start()
        meta = json.loads((snapshot / "snapshot.json").read_text())
        sdir = self.sandbox_dir(sandbox_id)
        slot: NetSlot | None = None
        cfg = json.loads((snapshot / "config.json").read_text())
        rng = IdRange.from_oci(cfg)   # the snapshot's own: its upper holds ids of that range
        sdir.mkdir()
        try:
            slot = await self.network.acquire()
            if egress is not None:
                await self.network.set_policy(slot.sandbox_ip, egress)
            self._write_atomic(sdir / "runtime.json", json.dumps({
                "sandbox_id": sandbox_id, "runtime": self.name, "netns": slot.netns,
                "slot": slot.index, "ip": slot.sandbox_ip, "host_ip": slot.host_ip,
                "layers": meta["layers"], "created_at": time.time(), "snapshot": str(snapshot),
                "disk_mb": meta.get("disk_mb"), "userns": rng.to_json() if rng else None}))
            fs = await disk.create(sdir, meta.get("disk_mb"))
            await disk.copy_upper(snapshot / "upper", fs / "upper")
            self._write_clone_hosts(fs / "upper", slot.sandbox_ip, str(cfg.get("hostname") or "e2b"))
            if rng is not None:
                self._own_clone_hosts(fs / "upper", rng)
            (sdir / "rootfs").mkdir()
            self._retarget_config(cfg, sandbox_id, slot, rng, snapshot)
            await self._mount_rootfs(sandbox_id)
            if meta.get("memory"):
                self._require_criu(sandbox_id)
                await self._restore(sandbox_id, snapshot / "image")
            else:
                await self._cold_start(sandbox_id)
            self._criu_conf(sdir)   # its own pauses keep their connections
            shutil.rmtree(sdir / "criu-work", ignore_errors=True)
        except BaseException:
            await asyncio.shield(self._teardown(sandbox_id, slot))
            raise
        return SandboxHandle(sandbox_id, slot.sandbox_ip)
