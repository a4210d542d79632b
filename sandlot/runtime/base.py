"""The runtime interface: a sandbox is a Linux container (runc today; crun etc. can slot in)."""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
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


@dataclass
class SandboxHandle:
    sandbox_id: str
    ip: str                         # where the host reaches the sandbox (envd on :49983)
    rebooted: bool = False          # a filesystem-only resume: envd started afresh from the config


class SandboxRuntimeError(Exception):
    """Raised when a runtime operation fails (message carries the runtime's own error)."""





@runtime_checkable
class Runtime(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def create(self, spec: SandboxSpec) -> SandboxHandle: ...
    async def kill(self, sandbox_id: str) -> None: ...
    async def list(self) -> list[SandboxHandle]: ...
    async def is_alive(self, sandbox_id: str) -> bool: ...
    def usage(self, sandbox_id: str) -> "Usage | None": ...
    def oom_killed(self, sandbox_id: str) -> bool: ...


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
