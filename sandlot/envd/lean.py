"""Keep envd's resident set small by skipping imports it never uses (call before importing uvicorn).

``import uvicorn`` pulls in ``uvicorn.main`` → click, watchfiles (Rust), multiprocessing — the
CLI and reloader only. A stand-in ``uvicorn.main`` exposes just ``Server``; only envd's own
process calls this, never a process that might also use the real uvicorn CLI.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def install() -> None:
    if "uvicorn" in sys.modules:
        return
    stub = types.ModuleType("uvicorn.main")

    def __getattr__(name: str) -> Any:
        if name == "Server":
            from uvicorn.server import Server

            return Server
        if name in ("main", "run"):
            raise AttributeError(f"uvicorn.{name} is not available inside envd")
        raise AttributeError(name)

    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    stub.main = stub.run = None  # type: ignore[attr-defined]
    sys.modules["uvicorn.main"] = stub
