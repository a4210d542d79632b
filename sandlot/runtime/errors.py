"""The runtime's errors, below every runtime module (``base`` re-exports them)."""

from __future__ import annotations


class SandboxRuntimeError(Exception):
    """Raised when a runtime operation fails (message carries the runtime's own error)."""


class CriuUnavailable(SandboxRuntimeError):
    """No working checkpoint/restore on this host (``Runtime.criu_error``): the API answers 503."""
