"""What callers hand the orchestrator: create and clone requests, and the envd launcher.

Their own module so the API, the Prime façade and every orchestrator part can name them
without importing each other.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sandlot.store.models import Build, Template

ENVD_VERSION = "0.6.13"
"""Highest envd protocol version whose gated features all work (see issue notes)."""

DEFAULT_USER = "user"
DEFAULT_WORKDIR = "/home/user"

EnvdLauncher = Callable[[int], tuple[list[str], dict[str, str]]]
"""Returns argv and environment that start envd inside a sandbox on a port."""

MountVolumes = Callable[[list[dict[str, str]] | None], Awaitable[None]]
"""Mounts on the host the volumes of a sandbox's stored ``volume_mounts`` (before runc binds them)."""


@dataclass
class CreateRequest:
    team_id: str
    template: Template
    build: Build
    alias: str | None
    timeout_s: int
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    auto_pause: bool = False
    auto_resume: bool = False
    pause_memory: bool = True
    allow_internet_access: bool | None = None
    network: dict[str, Any] | None = None
    sandbox_id: str | None = None
    """Pre-assigned id (the Prime façade answers with it before the sandbox exists)."""
    volume_mounts: list[dict[str, str]] | None = None
    """Resolved ``volumeMounts`` (``orchestrator/volumes.py``): ``[{volumeID, name, path}]``."""


@dataclass
class CloneRequest:
    """A sandbox from a snapshot or a fork; ``None`` fields keep the source's."""

    team_id: str
    timeout_s: int
    metadata: dict[str, str] | None = None
    env_vars: dict[str, str] | None = None
    allow_internet_access: bool | None = None
    network: dict[str, Any] | None = None
    """Stored (camelCase) ``network`` keys given at create; the others are the source's."""
