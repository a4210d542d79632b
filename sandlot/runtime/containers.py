"""The plumbing of a host's runc containers: paths, runc calls, state files, teardown.

Why a base class in its own module: ``runc.py`` (create, kill, queries) and
``checkpoint.py`` (pause, resume, snapshot, clone) both drive the same containers through
the same dozen private steps (run runc, read ``runtime.json``/``state.json``, wait for an
init to exit, tear a sandbox down). Those steps live here, below both, so the layers read
one way — ``ContainerHost`` ← ``Checkpointing`` (checkpoint.py) ← ``RuncRuntime`` (runc.py) —
with no import cycle and no ``self: "RuncRuntime"`` annotations. Composition (a
checkpointer handed a host object) was the alternative; it would have made every one of
these steps a public API of the runc runtime for a single caller, while a class layer
keeps them private to the runc implementation and gives the type checker real types.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import cgroups, idmap, overlay
from .base import SandboxRuntimeError, validate_sandbox_id
from .idmap import IdRange
from .network import Network, NetSlot, release_netns

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class ContainerHost:
    """Paths and low-level steps shared by every runc operation (set up by ``RuncRuntime``)."""

    name = "runc"
    data_dir: Path
    sandboxes_dir: Path
    runc_root: Path
    runc: str
    cgroup_parent: str
    network: Network
    before_start: Callable[[], Awaitable[None]] | None

    # --- paths ------------------------------------------------------------------------

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.sandboxes_dir / sandbox_id

    def _state_file(self, sandbox_id: str) -> Path:
        return self.runc_root / sandbox_id / "state.json"

    # --- runc and its files ---------------------------------------------------------------

    async def _runc(self, *args: str, check: bool = True) -> tuple[int, str]:
        """Run runc, capturing its stderr (container inits get their stdio from
        ``checkpoint.run_with_stdio`` instead)."""
        proc = await asyncio.create_subprocess_exec(
            self.runc, "--root", str(self.runc_root), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, e = await proc.communicate()
        rc = proc.returncode or 0
        err = e.decode(errors="replace").strip()
        if check and rc != 0:
            raise SandboxRuntimeError(f"runc {args[0]} failed (rc={rc}): {err}")
        return rc, err

    def _read_runtime_json(self, sandbox_id: str) -> JsonDict | None:
        """The sandbox's own record (netns, slot, ip, layers, disk size, id range)."""
        return _read_json(self.sandbox_dir(sandbox_id) / "runtime.json")

    def _read_state(self, sandbox_id: str) -> JsonDict | None:
        """runc's record of the container (init pid and start time)."""
        return _read_json(self._state_file(sandbox_id))

    @staticmethod
    def _write_atomic(path: Path, data: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(data)
        os.replace(tmp, path)

    def _log_tail(self, sandbox_id: str, n: int = 2000) -> str:
        try:
            return (self.sandbox_dir(sandbox_id) / "envd.log").read_bytes()[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def _check_traversable(self, rng: IdRange) -> None:
        """runc sets up a userns sandbox's mounts as its root (an unprivileged host uid), so
        every dir above the sandbox dir must be searchable by it: a clear error, not runc's EACCES."""
        blocked = idmap.untraversable(self.sandboxes_dir, rng)
        if blocked is not None and blocked in (self.data_dir.resolve(), *self.data_dir.resolve().parents[:2]):
            # our own data dirs (a server without user namespaces sharing them made them 0700)
            log.warning("user namespaces: opening %s to group %s (0710) again", blocked, rng.base)
            idmap.open_dir_to_range(blocked, rng)
            blocked = idmap.untraversable(self.sandboxes_dir, rng)
        if blocked is not None:
            raise SandboxRuntimeError(
                f"user namespaces: {blocked} is not searchable by the sandboxes' root (host uid {rng.base}); "
                f"make it 0711, or group {rng.base} with 0710 (sandlot serve does this for its data dir)")

    # --- teardown ---------------------------------------------------------------------

    async def stop(self, sandbox_id: str) -> None:
        """SIGKILL the container's init, the first half of a kill that a caller answers after:
        the init is its pid namespace's, so the kernel kills every process of the sandbox with it
        (none runs another instruction), and no runc or other subprocess is needed. ``kill``
        still removes everything; a paused sandbox (no container) has nothing to stop."""
        validate_sandbox_id(sandbox_id)
        state = self._read_state(sandbox_id)
        pid, start = (state or {}).get("init_process_pid"), (state or {}).get("init_process_start")
        if not pid:
            return
        try:
            fd = os.pidfd_open(int(pid))
        except (ProcessLookupError, OSError):
            return
        try:
            if start is not None and self._proc_start(int(pid)) != start:
                return   # pid reused by another process since: not ours to signal
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
        self._thaw_killed(sandbox_id)

    def _thaw_killed(self, sid: str) -> None:
        """A frozen container's tasks (a hot pause) take a SIGKILL only once thawed (the v1
        freezer holds them in the kernel until then): thawed *after* the signal, they die before
        running another instruction of their own. A no-op for a container that is not frozen."""
        cgroups.write("freezer", sid, "freezer.state", "THAWED", parent=self.cgroup_parent)

    async def _teardown(self, sid: str, slot: NetSlot | None) -> None:
        errors: list[str] = []
        state = self._read_state(sid)
        if state is not None or self._state_file(sid).parent.exists():
            pid = (state or {}).get("init_process_pid")
            start = (state or {}).get("init_process_start")
            await self._runc("kill", sid, "KILL", check=False)
            self._thaw_killed(sid)
            if pid:
                await self._wait_exit(int(pid), start)
            rc, err = await self._runc("delete", sid, check=False)
            if rc != 0 and self._state_file(sid).parent.exists():
                rc, err = await self._runc("delete", "-f", sid, check=False)
                if rc != 0 and self._state_file(sid).parent.exists():
                    errors.append(f"runc delete: {err}")
        sdir = self.sandbox_dir(sid)
        info = self._read_runtime_json(sid)
        try:
            for mp in sorted(overlay.mounts_under(sdir), key=len, reverse=True):
                overlay.umount(mp)
        except OSError as e:
            errors.append(str(e))
        netns = (info or {}).get("netns") or (slot.netns if slot else None)
        if netns:
            try:
                release_netns(netns)
            except OSError as e:
                errors.append(str(e))
        if slot is not None:
            self.network.unreserve(slot.index)
        if sdir.exists():
            try:
                shutil.rmtree(sdir)
            except OSError as e:
                errors.append(f"rm {sdir}: {e}")
        left = cgroups.remove(sid, parent=self.cgroup_parent)
        if left:
            errors.append(f"cgroups left: {left}")
        if errors:
            raise SandboxRuntimeError(f"kill {sid}: " + "; ".join(errors))

    # --- container inits ----------------------------------------------------------------

    @staticmethod
    def _proc_start(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except OSError:
            return None
        fields = data.rsplit(")", 1)[1].split()
        return int(fields[19])   # field 22: starttime

    @staticmethod
    def _proc_state(pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None

    async def _wait_exit(self, pid: int, start: int | None, timeout: float = 10.0) -> None:
        """Wait until the container init has exited; reap it if it is our child
        (it is, when this process is a child subreaper)."""
        if start is not None and self._proc_start(pid) not in (None, start):
            return  # pid reused: the init is long gone
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            loop = asyncio.get_running_loop()
            if not select.select([fd], [], [], 0)[0]:
                fut: asyncio.Future[None] = loop.create_future()

                def exited() -> None:
                    if not fut.done():
                        fut.set_result(None)
                loop.add_reader(fd, exited)
                try:
                    await asyncio.wait_for(fut, timeout)
                except asyncio.TimeoutError:
                    log.warning("container init %d did not exit after KILL", pid)
                finally:
                    loop.remove_reader(fd)
        finally:
            os.close(fd)
        self._reap(pid)

    @staticmethod
    def _reap(pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    async def is_alive(self, sandbox_id: str) -> bool:
        state = self._read_state(sandbox_id)
        if not state:
            return False
        pid, start = state.get("init_process_pid"), state.get("init_process_start")
        if not pid:
            return False
        st = self._proc_state(pid)
        if st is None or (start is not None and self._proc_start(pid) != start):
            return False
        if st in ("Z", "X"):
            self._reap(pid)
            return False
        return True


def _read_json(path: Path) -> JsonDict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
