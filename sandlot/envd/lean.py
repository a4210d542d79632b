"""Keep envd's resident set small by skipping imports it never uses (call before any other import).

Every sandbox runs its own envd, so each MiB of its heap is a MiB per sandbox (issue 14). What
is kept out, measured as private memory of the envd runtime's Python:

* ``ssl`` (≈ 2.4 MiB: OpenSSL's init plus the module's enums): envd serves plain HTTP inside
  the sandbox; asyncio and uvicorn import it only to offer TLS. A stand-in module answers the
  names they touch at import time, and anything that would actually use TLS fails.
* ``uvicorn.main`` → click, watchfiles (Rust), multiprocessing: uvicorn's CLI and reloader.
  A stand-in exposes just ``Server``.
* ``logging.config`` → logging.handlers, pickle, socketserver, configparser: uvicorn only
  calls ``dictConfig`` for a ``log_config``, and envd passes none.
* ``importlib.metadata`` (→ email, zipfile, csv, pathlib…): connectrpc reads its own version
  with it at import; the stand-in version is the one envd's requirements pin.

Only envd's own process calls this, never a process that might also use the real modules.
"""

from __future__ import annotations

import sys
import types
from typing import Any

CONNECTRPC_VERSION = "0.12.1"
"""As pinned in ``sandlot/envd/requirements.txt``."""


def _absent(module: str) -> Any:
    def __getattr__(name: str) -> Any:
        raise AttributeError(f"{module}.{name} is not available inside envd")
    return __getattr__


def _ssl_stand_in() -> types.ModuleType:
    ssl = types.ModuleType("ssl", "Stand-in: envd has no TLS (see sandlot/envd/lean.py).")

    class SSLError(OSError):
        pass

    class _Unavailable:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("TLS is not available inside envd")

    names: dict[str, Any] = {
        "SSLError": SSLError,
        "SSLWantReadError": type("SSLWantReadError", (SSLError,), {}),
        "SSLWantWriteError": type("SSLWantWriteError", (SSLError,), {}),
        "SSLSyscallError": type("SSLSyscallError", (SSLError,), {}),
        "SSLZeroReturnError": type("SSLZeroReturnError", (SSLError,), {}),
        "SSLEOFError": type("SSLEOFError", (SSLError,), {}),
        "CertificateError": type("CertificateError", (SSLError, ValueError), {}),
        "SSLContext": type("SSLContext", (_Unavailable,), {}),
        "SSLSocket": type("SSLSocket", (_Unavailable,), {}),
        "SSLObject": type("SSLObject", (_Unavailable,), {}),
        "MemoryBIO": type("MemoryBIO", (_Unavailable,), {}),
        "PROTOCOL_TLS_SERVER": 17,
        "PROTOCOL_TLS_CLIENT": 16,
        "CERT_NONE": 0,
        "CERT_OPTIONAL": 1,
        "CERT_REQUIRED": 2,
    }
    for name, value in names.items():
        setattr(ssl, name, value)
    ssl.__getattr__ = _absent("ssl")  # type: ignore[method-assign]
    return ssl


def _uvicorn_main() -> types.ModuleType:
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
    return stub


def _metadata() -> types.ModuleType:
    stub = types.ModuleType("importlib.metadata")

    def version(name: str) -> str:
        if name == "connectrpc":
            return CONNECTRPC_VERSION
        raise AttributeError(f"importlib.metadata.version({name!r}) is not available inside envd")

    stub.version = version  # type: ignore[attr-defined]
    stub.__getattr__ = _absent("importlib.metadata")  # type: ignore[method-assign]
    return stub


def install() -> None:
    if "uvicorn" in sys.modules or "asyncio" in sys.modules:
        return
    logging_config = types.ModuleType("logging.config", "Stand-in: envd passes no log_config.")
    logging_config.__getattr__ = _absent("logging.config")  # type: ignore[method-assign]
    stand_ins = {
        "ssl": _ssl_stand_in(),
        "uvicorn.main": _uvicorn_main(),
        "logging.config": logging_config,
        "importlib.metadata": _metadata(),
    }
    for name, module in stand_ins.items():
        sys.modules.setdefault(name, module)
