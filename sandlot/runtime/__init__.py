"""Sandbox runtime: a sandbox is a Linux container (runc; see ``base.Runtime``)."""
from typing import Any

from .base import (BindMount, Runtime, SandboxHandle, SandboxRuntimeError, SandboxSpec,
                   set_child_subreaper)

__all__ = ["BindMount", "Runtime", "SandboxHandle", "SandboxRuntimeError", "SandboxSpec",
           "set_child_subreaper", "RuncRuntime"]


def __getattr__(name: str) -> Any:   # RuncRuntime on first use: importing runc is not free
    if name == "RuncRuntime":
        from .runc import RuncRuntime
        return RuncRuntime
    raise AttributeError(name)
