"""An in-memory :class:`~sandlot.runtime.base.Runtime` for in-process tests: instant, no root.

What it models — the bookkeeping the orchestrator relies on, with runc's rules:
- sandboxes in states ``running``, ``frozen`` (a hot pause, or a snapshot's ``runc pause`` a crash left),
  ``paused`` (container released, address kept) and ``dead`` (the init exited; the
  container is still listed until killed, as runc's is);
- addresses on loopback, ``127.0.<octet>.N`` (default octet 77), so a test can bind a fake
  envd or upstream on a sandbox's address; a paused sandbox keeps its address, a killed
  one frees it;
- pause with or without memory, resume (``rebooted`` for a filesystem-only pause),
  ``finish_resume``/``abort_resume``, ``recover_pause``, ``paused_ids``;
- snapshots as real directories: ``snapshot`` writes ``dest/snapshot.json`` (failing like
  runc if ``dest`` exists), ``clone`` reads it and raises :class:`SandboxRuntimeError`
  when it is missing, so path bookkeeping is exercised for real;
- egress policies per address (``egress``), cleared to deny-all like ``Network.clear_policy``;
- ``criu_error``: memory pause, memory resume, memory snapshot and clone of a memory
  snapshot raise :class:`CriuUnavailable`, as on a host without CRIU.

Test knobs: ``fail_next[method] = exc`` makes the next call of that method raise ``exc``
(after argument checks, before any change); ``die(id, oom=...)``, ``freeze(id)``,
``memory[id]``, ``free_disk`` and ``calls`` (every call, in order).

What it does not model: processes (``init_pid`` is ``None``: no guard can act on it),
envd (a test serves its own on the sandbox's address if it needs one), disk contents
(``kill_keeping_upper`` creates an empty ``dest``), cgroup counters (``usage`` is made up
from the spec), timings, and concurrency beyond asyncio's (every call completes at once).
"""
from __future__ import annotations

import builtins
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .base import (BindMount, CriuUnavailable, PauseRecovery, SandboxHandle, SandboxRuntimeError, SandboxSpec,
                   validate_sandbox_id)
from .egress import ALL_IPV4, EgressPolicy
from .idmap import IdRange
from .usage import Usage

State = Literal["running", "frozen", "paused", "dead"]


@dataclass
class FakeSandbox:
    sandbox_id: str
    ip: str
    layers: builtins.list[Path]
    memory_mb: int
    disk_mb: int | None
    state: State = "running"
    paused_memory: bool | None = None
    """Set while paused (and during a resume until ``finish_resume``): the pause kept memory."""
    oom: bool = False


class FakeRuntime:
    """In-memory sandboxes with runc's lifecycle rules (see the module docstring)."""

    name = "fake"

    def __init__(self, *, octet: int = 77, free_disk: int = 64 * 2**30, egress_rules: bool = True) -> None:
        if not 0 <= octet <= 255:
            raise ValueError("octet must be 0..255")
        self.octet = octet
        self.criu_error: str | None = None
        self.before_start: Callable[[], Awaitable[None]] | None = None
        self.cgroup_parent: str | None = None
        """No cgroups: the host guards (OOM guard, lxcfs watch) have nothing to act on."""
        self.userns: IdRange | None = None
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.egress: dict[str, EgressPolicy] = {}
        """Policy in force per sandbox address."""
        self.fail_next: dict[str, Exception] = {}
        self.memory: dict[str, int] = {}
        """``memory_bytes`` per sandbox (default: half its memory limit)."""
        self.free_disk = free_disk
        self.calls: builtins.list[tuple[str, ...]] = []
        self.started = False
        self._egress_rules = egress_rules
        self.root_for_exports = Path(tempfile.mkdtemp(prefix="fake-runtime-exports-"))
        """Where ``export_paused`` stages its (tiny) pause image."""

    # --- test knobs -------------------------------------------------------------------

    def die(self, sandbox_id: str, *, oom: bool = False) -> None:
        """The sandbox's init exits (killed by the OOM killer when ``oom``)."""
        sb = self._get(sandbox_id)
        sb.state, sb.oom = "dead", oom

    def freeze(self, sandbox_id: str) -> None:
        """Leave the sandbox frozen, as a server killed mid-snapshot does."""
        self._get(sandbox_id).state = "frozen"

    def _call(self, method: str, *args: str) -> None:
        self.calls.append((method, *args))
        exc = self.fail_next.pop(method, None)
        if exc is not None:
            raise exc

    def _get(self, sandbox_id: str) -> FakeSandbox:
        try:
            return self.sandboxes[sandbox_id]
        except KeyError:
            raise SandboxRuntimeError(f"sandbox {sandbox_id} does not exist") from None

    def _address(self) -> str:
        used = {sb.ip for sb in self.sandboxes.values()}
        for n in range(2, 255):
            ip = f"127.0.{self.octet}.{n}"
            if ip not in used:
                return ip
        raise SandboxRuntimeError(f"fake subnet 127.0.{self.octet}.0/24 exhausted")

    async def _starting(self) -> None:
        if self.before_start is not None:
            await self.before_start()

    def _require_criu(self) -> None:
        if self.criu_error:
            raise CriuUnavailable(self.criu_error)

    # --- the runtime itself --------------------------------------------------------------

    async def start(self) -> None:
        self._call("start")
        self.started = True

    async def close(self) -> None:
        self._call("close")
        self.started = False

    # --- containers -------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        validate_sandbox_id(spec.sandbox_id)
        self._call("create", spec.sandbox_id)
        await self._starting()
        if spec.sandbox_id in self.sandboxes:
            raise SandboxRuntimeError(f"container {spec.sandbox_id} already exists")
        sb = FakeSandbox(spec.sandbox_id, self._address(), list(spec.layers), spec.memory_mb, spec.disk_mb)
        self.egress.pop(sb.ip, None)   # a reused address starts open, as a remade netns slot does
        self.sandboxes[sb.sandbox_id] = sb
        return SandboxHandle(sb.sandbox_id, sb.ip)

    async def kill(self, sandbox_id: str) -> None:
        validate_sandbox_id(sandbox_id)
        self._call("kill", sandbox_id)
        sb = self.sandboxes.pop(sandbox_id, None)
        if sb is not None:
            self.egress.pop(sb.ip, None)
            self.memory.pop(sandbox_id, None)

    def foreground(self, sandbox_id: str) -> None:
        validate_sandbox_id(sandbox_id)
        self._call("foreground", sandbox_id)

    async def stop(self, sandbox_id: str) -> None:
        validate_sandbox_id(sandbox_id)
        self._call("stop", sandbox_id)
        sb = self.sandboxes.get(sandbox_id)
        if sb is not None and sb.state in ("running", "frozen"):
            sb.state = "dead"   # still to be removed by ``kill``

    async def kill_keeping_upper(self, sandbox_id: str, dest: Path) -> None:
        validate_sandbox_id(sandbox_id)
        self._call("kill_keeping_upper", sandbox_id)
        try:
            self._get(sandbox_id)
            dest.mkdir(parents=True)   # runc renames the upper dir there: it must not exist
        finally:
            await self.kill(sandbox_id)

    async def list(self) -> builtins.list[SandboxHandle]:
        return [SandboxHandle(sb.sandbox_id, sb.ip) for sb in sorted(self.sandboxes.values(),
                                                                      key=lambda s: s.sandbox_id)
                if sb.state != "paused"]

    async def is_alive(self, sandbox_id: str) -> bool:
        sb = self.sandboxes.get(sandbox_id)
        return sb is not None and sb.state in ("running", "frozen")

    async def thaw_if_frozen(self, sandbox_id: str) -> bool:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.state != "frozen":
            return False
        sb.state = "running"
        return True

    def oom_killed(self, sandbox_id: str) -> bool:
        sb = self.sandboxes.get(sandbox_id)
        return sb is not None and sb.oom

    def usage(self, sandbox_id: str) -> Usage | None:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.state not in ("running", "frozen"):
            return None
        return Usage(taken_at=0.0, cpu_ns=0, mem_used=self.memory_bytes(sandbox_id),
                     mem_total=sb.memory_mb * 2**20, mem_cache=0, disk_used=0)

    def init_pid(self, sandbox_id: str) -> int | None:
        return None   # no process: host-side guards have nothing to act on

    # --- checkpoint / restore ---------------------------------------------------------------

    def memory_bytes(self, sandbox_id: str) -> int:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.state not in ("running", "frozen"):
            return 0
        return self.memory.get(sandbox_id, sb.memory_mb * 2**20 // 2)

    def free_bytes(self) -> int:
        return self.free_disk

    async def pause(self, sandbox_id: str, *, memory: bool = True) -> dict[str, float]:
        """A frozen sandbox (hot-paused) is dumped as runc's is: the freeze is already done."""
        validate_sandbox_id(sandbox_id)
        sb = self._get(sandbox_id)
        if memory:
            self._require_criu()
        self._call("pause", sandbox_id)
        if sb.state not in ("running", "frozen"):
            raise SandboxRuntimeError(f"runc pause failed: container {sandbox_id} is {sb.state}, not running")
        sb.state, sb.paused_memory = "paused", memory
        return {"freeze": 0.0, "dump": 0.0, "total": 0.0} if memory else {"total": 0.0}

    async def hot_pause(self, sandbox_id: str) -> dict[str, float]:
        validate_sandbox_id(sandbox_id)
        sb = self._get(sandbox_id)
        self._require_criu()
        self._call("hot_pause", sandbox_id)
        if sb.state not in ("running", "frozen"):
            raise SandboxRuntimeError(f"container {sandbox_id} is {sb.state}, not running")
        sb.state = "frozen"
        return {"freeze": 0.0, "total": 0.0}

    async def resume(self, sandbox_id: str, *, memory: bool = True) -> SandboxHandle:
        validate_sandbox_id(sandbox_id)
        await self._starting()
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or sb.state != "paused" or sb.paused_memory is None:
            raise SandboxRuntimeError(f"sandbox {sandbox_id} is not paused")
        restore = sb.paused_memory and memory
        if restore:
            self._require_criu()
        self._call("resume", sandbox_id)
        sb.state = "running"
        return SandboxHandle(sandbox_id, sb.ip, rebooted=not restore)

    def finish_resume(self, sandbox_id: str) -> None:
        self.calls.append(("finish_resume", sandbox_id))
        sb = self.sandboxes.get(sandbox_id)
        if sb is not None:
            sb.paused_memory = None

    async def abort_resume(self, sandbox_id: str) -> None:
        self._call("abort_resume", sandbox_id)
        sb = self.sandboxes.get(sandbox_id)
        if sb is not None and sb.paused_memory is not None:
            sb.state = "paused"

    async def recover_pause(self, sandbox_id: str) -> PauseRecovery:
        self._call("recover_pause", sandbox_id)
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            return PauseRecovery("lost")
        if sb.state in ("running", "frozen"):
            sb.state, sb.paused_memory = "running", None
            return PauseRecovery("running", sb.ip)
        if sb.state == "paused":
            return PauseRecovery("paused")
        return PauseRecovery("lost")

    def paused_ids(self) -> builtins.list[str]:
        return sorted(sid for sid, sb in self.sandboxes.items() if sb.paused_memory is not None)

    async def snapshot(self, sandbox_id: str, dest: Path, *, memory: bool = True) -> None:
        validate_sandbox_id(sandbox_id)
        sb = self._get(sandbox_id)
        if memory:
            self._require_criu()
        self._call("snapshot", sandbox_id)
        if sb.state != "running":
            raise SandboxRuntimeError(f"runc pause failed: container {sandbox_id} is {sb.state}, not running")
        dest.mkdir(parents=True)
        (dest / "snapshot.json").write_text(json.dumps({
            "source": sandbox_id, "layers": [str(p) for p in sb.layers], "memory": memory,
            "disk_mb": sb.disk_mb, "memory_mb": sb.memory_mb, "runtime": self.name}))

    async def clone(self, snapshot: Path, sandbox_id: str, *, egress: EgressPolicy | None = None) -> SandboxHandle:
        validate_sandbox_id(sandbox_id)
        await self._starting()
        try:
            meta = json.loads((snapshot / "snapshot.json").read_text())
        except (OSError, ValueError) as exc:
            raise SandboxRuntimeError(f"{snapshot} is not a snapshot: {exc}") from exc
        if meta.get("memory"):
            self._require_criu()
        self._call("clone", sandbox_id)
        if sandbox_id in self.sandboxes:
            raise SandboxRuntimeError(f"container {sandbox_id} already exists")
        sb = FakeSandbox(sandbox_id, self._address(), [Path(p) for p in meta.get("layers", [])],
                         int(meta.get("memory_mb") or 512), meta.get("disk_mb"))
        self.egress.pop(sb.ip, None)
        if egress is not None:
            self.egress[sb.ip] = egress
        self.sandboxes[sandbox_id] = sb
        return SandboxHandle(sandbox_id, sb.ip)

    def export_paused(self, sandbox_id: str) -> builtins.list[tuple[Path, builtins.list[str]]]:
        sb = self._get(sandbox_id)
        if sb.paused_memory is None:
            raise SandboxRuntimeError(f"sandbox {sandbox_id} is not paused")
        self.calls.append(("export_paused", sandbox_id))
        staged = self.root_for_exports / sandbox_id
        staged.mkdir(parents=True, exist_ok=True)
        (staged / "paused.json").write_text(json.dumps({
            "memory": sb.paused_memory, "disk_mb": sb.disk_mb, "memory_mb": sb.memory_mb}))
        return [(staged, ["paused.json"])]

    async def adopt_paused(self, bundle: Path, sandbox_id: str, layers: builtins.list[Path], *,
                           mounts: builtins.list[BindMount] | None = None,
                           egress: EgressPolicy | None = None) -> None:
        validate_sandbox_id(sandbox_id)
        self._call("adopt_paused", sandbox_id)
        if sandbox_id in self.sandboxes:
            raise SandboxRuntimeError(f"container {sandbox_id} already exists")
        meta = json.loads((bundle / "paused.json").read_text())
        sb = FakeSandbox(sandbox_id, self._address(), list(layers), int(meta.get("memory_mb") or 512),
                         meta.get("disk_mb"))
        sb.state, sb.paused_memory = "paused", bool(meta.get("memory"))
        if egress is not None:
            self.egress[sb.ip] = egress
        self.sandboxes[sandbox_id] = sb

    # --- network ----------------------------------------------------------------------

    @property
    def egress_rules(self) -> bool:
        return self._egress_rules

    def _check_address(self, ip: str) -> None:
        if not ip.startswith(f"127.0.{self.octet}.") or not any(sb.ip == ip for sb in self.sandboxes.values()):
            raise SandboxRuntimeError(f"{ip} is not a sandbox address of this runtime")

    async def set_egress(self, ip: str, policy: EgressPolicy) -> None:
        self._check_address(ip)
        self._call("set_egress", ip)
        self.egress[ip] = policy

    async def clear_egress(self, ip: str) -> None:
        self._call("clear_egress", ip)
        self.egress[ip] = EgressPolicy(deny=(ALL_IPV4,))
