"""What the front door needs from whoever runs sandboxes: a route table, not the orchestrator.

The orchestrator implements :class:`RouteTable`; the front door and the Prime gateway only
read it, so neither imports the orchestrator (and a node agent could serve it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Route:
    """Where the front door sends a sandbox's traffic."""

    ip: str
    state: str
    access_token: str
    traffic_token: str | None = None
    """Required in ``e2b-traffic-access-token`` on user ports when set (allowPublicTraffic=false)."""
    mask_request_host: str | None = None
    https_ports: tuple[int, ...] = ()
    """Sandbox ports that speak TLS themselves (E2B's ``httpsPorts``): the front door connects to
    them over TLS, without verifying the sandbox's (typically self-signed) certificate."""


PauseHook = Callable[[str], Awaitable[None]]
"""Called with a sandbox IP after it was paused (the front door drops stale keep-alives)."""


class RouteTable(Protocol):
    def route(self, sandbox_id: str) -> Route | None:
        """The running sandbox's route, ``None`` when it is not running here."""
        ...

    def signing_tokens(self) -> list[tuple[str, str]]:
        """``(sandbox_id, envd_access_token)`` of running sandboxes, for signed-URL routing."""
        ...

    async def wake(self, sandbox_id: str) -> Route | None:
        """Resume a paused sandbox that asked for autoResume; its route, or ``None``."""
        ...

    def on_pause(self, hook: PauseHook) -> None:
        """Register ``hook``, awaited with a sandbox's IP after it was paused."""
        ...
