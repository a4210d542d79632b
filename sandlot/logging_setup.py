"""structlog configuration shared by the server and the CLI.

Log lines are JSON (one object a line, for log shippers) when stderr is not a terminal, and
human-readable on a terminal; ``SANDLOT_LOG_FORMAT`` (``json``/``console``) overrides. The
standard library's loggers (uvicorn, alembic) go through the same renderer.

Every line of an API request carries its ``request_id`` and, once known, the caller's
``team_id`` and the ``sandbox_id``/``template_id``/``build_id`` of the path:
:data:`REQUEST` holds one mutable dict per request (set by ``sandlot/api/request_context.py``),
so ids learnt in a worker thread (the API-key check runs in one) reach the request's later
lines, and the dict is emptied when the request ends, so background tasks it spawned stop
carrying its ids.

:func:`redact` is the backstop against secrets in logs: values under sensitive keys
(tokens, keys, secrets, passwords, auth headers) and anything shaped like an E2B API key or
access token, anywhere in a line, are replaced by ``[redacted]``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

REQUEST: ContextVar[dict[str, str] | None] = ContextVar("sandlot_request", default=None)
"""The current API request's ids (``request_id``, ``team_id``, ``sandbox_id``, …)."""

REDACTED = "[redacted]"
SENSITIVE_KEY = re.compile(
    r"(?i)(^|[_\-.])(token|tokens|api[_\-]?key|apikey|secret|secrets|password|passwd|authorization|"
    r"cookie|set[_\-]cookie|signature[_\-]?secret|signaturesecret|accesstoken|credentials?|private[_\-]?key)$"
    r"|^(x[_\-])?(api[_\-]key|access[_\-]token|admin[_\-]token)$|^env[_\-]?vars$|^envvars$")
"""Keys whose values are never logged (``x-api-key``, ``envd_access_token``, ``signatureSecret``,
``env_vars``…)."""
SECRET_SHAPES = re.compile(r"\b(sk_e2b_[0-9a-f]{16,}|e2b_[0-9a-f]{40})\b")
"""E2B API keys and access tokens, wherever they appear in a line."""


def bind_request(**ids: str | None) -> None:
    """Add ids to the current request's log context (no-op outside a request)."""
    current = REQUEST.get()
    if current is not None:
        current.update({k: v for k, v in ids.items() if v})


def add_request_context(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    current = REQUEST.get()
    if current:
        for key, value in list(current.items()):
            event.setdefault(key, value)
    return event


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return SECRET_SHAPES.sub(REDACTED, value) if ("e2b_" in value) else value
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(k, str) and SENSITIVE_KEY.search(k) and v else _clean(v, depth + 1))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace secrets in a log event (see the module docstring)."""
    for key in list(event.keys()):
        value = event[key]
        if key != "event" and SENSITIVE_KEY.search(key) and value:
            event[key] = REDACTED
        else:
            event[key] = _clean(value)
    return event


def use_json(fmt: str = "auto", stream: Any = None) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    stream = stream or sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure(level: str = "info", fmt: str = "auto") -> None:
    """``fmt``: ``auto`` (JSON unless stderr is a terminal), ``json`` or ``console``."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if use_json(fmt)
                     else structlog.dev.ConsoleRenderer(colors=False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                    redact, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
