"""The runtime interface: a sandbox is a Linux container (runc today; crun etc. can slot in)."""
from __future__ import annotations

import builtins
import ctypes
import ctypes.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from sandlot.runtime.errors import CriuUnavailable as CriuUnavailable
from sandlot.runtime.errors import SandboxRuntimeError as SandboxRuntimeError

if TYPE_CHECKING:
    from sandlot.runtime.egress import EgressPolicy
    from sandlot.runtime.idmap import IdRange
    from sandlot.runtime.usage import Usage

SANDBOX_ID_RE = re.compile(r"^[a-z0-9]{1,64}$")


@dataclass
class BindMount:
    source: Path
    destination: str
    read_only: bool = True


@dataclass
class SandboxSpec:
    sandbox_id: str                 # [a-z0-9]+ (21 chars in practice)
    layers: list[Path]              # read-only lower dirs, topmost first
    cpu_count: int                  # -> cfs quota cpu_count * 100 ms per 100 ms period
    memory_mb: int                  # -> memory limit (memsw the same: no swap)
    pids_limit: int
    args: list[str]                 # argv of the container's init (the envd agent)
    env: dict[str, str]
    mounts: list[BindMount] = field(default_factory=list)
    hostname: str = "sandbox"
    disk_mb: int | None = None      # size of the writable disk (``None``: unlimited, host fs)
    background: bool = False        # booted ahead of need (warm pool): lower CPU weight until ``foreground``


@dataclass
class SandboxHandle:
    sandbox_id: str
    ip: str                         # where the host reaches the sandbox (envd on :49983)
    rebooted: bool = False          # a filesystem-only resume: envd started afresh from the config


@dataclass(frozen=True)
class PauseRecovery:
    """How a pause/resume interrupted by a crash settled (``Runtime.recover_pause``)."""

    outcome: Literal["running", "paused", "lost"]
    ip: str | None = None
    """The sandbox's address when it is ``running``."""


@runtime_checkable
class Runtime(Protocol):
    """Everything the orchestrator, the template builder and the guards ask of a host's sandboxes.

    Calls are coarse and their arguments plain values (ids, paths on the runtime's host,
    dataclasses of strings and numbers), so a node agent on another host can serve the
    same seam over the network. ``RuncRuntime`` is the real implementation,
    ``FakeRuntime`` an in-memory one for in-process tests.
    """

    criu_error: str | None
    """Why checkpoint operations (pause with memory, snapshot, clone) are unavailable; ``None``: they work."""
    before_start: Callable[[], Awaitable[None]] | None
    """Awaited before any container starts (the lxcfs watch repairs lxcfs there)."""

    @property
    def cgroup_parent(self) -> str | None:
        """Host-local: the cgroup sandboxes live under, for the guards beside the runtime (``None``: none)."""
        ...

    @property
    def userns(self) -> "IdRange | None":
        """The host id range sandboxes' ids map into (a build shifts COPY owners into it); ``None``: no userns."""
        ...

    # --- the runtime itself
    async def start(self) -> None: ...
    async def close(self) -> None: ...

    # --- containers
    async def create(self, spec: SandboxSpec) -> SandboxHandle: ...
    async def kill(self, sandbox_id: str) -> None: ...
    async def stop(self, sandbox_id: str) -> None:
        """Kill every process of the sandbox now, cheaply (no teardown): ``kill`` follows,
        possibly later and off the request path."""
        ...
    async def kill_keeping_upper(self, sandbox_id: str, dest: Path) -> None:
        """Kill, moving the writable layer to ``dest`` first (a template build's result)."""
        ...
    def foreground(self, sandbox_id: str) -> None:
        """A ``background`` sandbox was claimed: it competes for CPU like any other from now on."""
        ...
    async def list(self) -> list[SandboxHandle]: ...
    async def is_alive(self, sandbox_id: str) -> bool: ...
    async def thaw_if_frozen(self, sandbox_id: str) -> bool:
        """Thaw a frozen container (one a killed server left frozen, or a hot pause's); whether it was."""
        ...
    def oom_killed(self, sandbox_id: str) -> bool: ...
    def usage(self, sandbox_id: str) -> "Usage | None": ...
    def init_pid(self, sandbox_id: str) -> int | None:
        """Host pid of the sandbox's init, for guards running on the runtime's own host."""
        ...

    # --- checkpoint / restore
    def memory_bytes(self, sandbox_id: str) -> int:
        """Memory the sandbox uses now (what a memory image of it will need on disk)."""
        ...
    def free_bytes(self) -> int:
        """Free disk space where pause and snapshot images are written."""
        ...
    async def pause(self, sandbox_id: str, *, memory: bool = True) -> dict[str, float]:
        """Checkpoint (``memory``) or stop, keeping disk and address; timings in ms. On failure the
        sandbox is left running when it can be — or frozen, when it was hot-paused: a pause of a
        hot-paused sandbox is its cool-down (``hot_pause``)."""
        ...
    async def hot_pause(self, sandbox_id: str) -> dict[str, float]:
        """Stop every process of the sandbox in its freezer, container and memory kept (timings in
        ms): nothing runs, no timer fires. ``thaw_if_frozen`` resumes it, ``pause`` dumps it (the
        frozen container survives a server restart, not a host reboot). Needs CRIU like ``pause``
        with memory, since a hot pause must be able to become a checkpoint."""
        ...
    async def resume(self, sandbox_id: str, *, memory: bool = True) -> SandboxHandle:
        """Bring a paused sandbox back in place; ``memory=False`` cold-boots it from its disk even
        when a memory image exists (``rebooted``; the image goes at ``finish_resume``)."""
        ...
    def finish_resume(self, sandbox_id: str) -> None:
        """Drop the pause image once the resumed sandbox answered."""
        ...
    async def abort_resume(self, sandbox_id: str) -> None:
        """Back to paused after a resume whose sandbox did not come up."""
        ...
    async def recover_pause(self, sandbox_id: str) -> PauseRecovery: ...
    def paused_ids(self) -> builtins.list[str]: ...   # (``list`` is the method above)
    async def snapshot(self, sandbox_id: str, dest: Path, *, memory: bool = True) -> None:
        """Copy a running sandbox (memory when ``memory``, and disk) into ``dest``; it keeps running."""
        ...
    async def clone(self, snapshot: Path, sandbox_id: str, *, egress: "EgressPolicy | None" = None) -> SandboxHandle:
        """A new sandbox restored from ``snapshot``: own disk copy, address; ``egress`` in force first."""
        ...
    def export_paused(self, sandbox_id: str) -> builtins.list[tuple[Path, builtins.list[str]]]:
        """What another host needs to resume this paused sandbox, as (dir, names in it) pairs to
        pack into one tree (``sandlot/orchestrator/adoption.py``); the sandbox must stay paused."""
        ...
    async def adopt_paused(self, bundle: Path, sandbox_id: str, layers: builtins.list[Path], *,
                           mounts: builtins.list[BindMount] | None = None,
                           egress: "EgressPolicy | None" = None) -> None:
        """Make a paused sandbox of this host from another host's ``export_paused`` tree at
        ``bundle`` (its own address; ``layers`` are this host's paths of its layers, ``mounts``
        this host's sources of the config's bind mounts, by destination); ``resume`` then brings
        it back as for any pause. ``bundle`` may be consumed."""
        ...

    # --- network
    @property
    def egress_rules(self) -> bool:
        """Whether per-sandbox egress policies can be enforced (``set_egress``)."""
        ...
    async def set_egress(self, ip: str, policy: "EgressPolicy") -> None: ...
    async def clear_egress(self, ip: str) -> None: ...


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    """Make this process the reaper of orphaned descendants (detached container inits).

    Call once at server start-up, before creating sandboxes. The runtime reaps the
    container inits itself when it kills them.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_CHILD_SUBREAPER) failed")


def validate_sandbox_id(sandbox_id: str) -> None:
    if not SANDBOX_ID_RE.match(sandbox_id):
        raise ValueError(f"invalid sandbox id {sandbox_id!r}")
