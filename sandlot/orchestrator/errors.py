"""The orchestrator's domain errors: what went wrong, never how to say it over HTTP.

``sandlot/api/errors.py`` maps each class to E2B's status and JSON in one table, and to
Prime's shape for the Prime façade. Quota errors are :class:`sandlot.quotas.QuotaExceeded`.
"""

from __future__ import annotations


class SandboxError(Exception):
    """A lifecycle operation failed; ``message`` is meant for the API's caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SandboxNotFound(SandboxError):
    """No such sandbox for this team (or it is another team's)."""

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"Sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
        self.sandbox_id = sandbox_id


class Conflict(SandboxError):
    """The sandbox is in a state that does not allow the operation (paused, pausing, …)."""


class InvalidRequest(SandboxError):
    """The caller asked for something invalid (a bad egress rule, a lifetime past the maximum)."""


class InsufficientStorage(SandboxError):
    """The host's disk cannot hold what the operation must write (a memory image)."""


class OperationFailed(SandboxError):
    """The runtime failed; the message says what is left (e.g. "The sandbox keeps running")."""


class GuestUnhealthy(SandboxError):
    """The sandbox's guest agent (envd) does not answer, and the operation needs it to
    (a strict or a filesystem-only pause). Nothing changed: the sandbox keeps running."""


class GuestUnresponsiveAtPause(Conflict):
    """A plain (memory) resume of a sandbox whose snapshot was taken while its envd did not
    answer: restoring that memory would bring the hung agent back; resume without memory."""

    error_code = "sandbox_snapshot_guest_agent_unresponsive"


class NoNodeAvailable(SandboxError):
    """No node may take a new sandbox (the only one is draining or unavailable); sandboxes
    already running are not affected."""
