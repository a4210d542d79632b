"""Jupyter iopub messages → the NDJSON lines of ``POST /execute`` (E2B spec §5.3).

Pure functions, so the wire shapes can be checked without a kernel. Lines never carry
``None`` values (the E2B server serialises with ``exclude_none``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

Line = dict[str, Any]

MIME_KEYS: dict[str, str] = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}
"""MIME type of a display bundle → the ``Result`` field the SDK reads; others go to ``extra``."""

END = {"type": "end_of_execution"}
KEEPALIVE = {"type": "keepalive"}
UNEXPECTED_END = {
    "type": "error",
    "name": "UnexpectedEndOfExecution",
    "value": "Connection to the execution was closed before the execution was finished",
    "traceback": "",
}


def encode(line: Line) -> bytes:
    """One NDJSON line (never blank: the SDK ``json.loads`` every line)."""
    return json.dumps(line, separators=(",", ":"), default=str).encode() + b"\n"


def timestamp(header: dict[str, Any]) -> str:
    """Jupyter's ``header.date`` as ISO 8601 UTC; now when the kernel sent none."""
    value = header.get("date")
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, str) and value:
        return value
    else:
        when = datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def result(bundle: dict[str, Any], *, main: bool) -> Line:
    """An ``execute_result`` (main) or ``display_data`` MIME bundle as a ``result`` line."""
    line: Line = {"type": "result"}
    extra: dict[str, Any] = {}
    for mime, value in bundle.items():
        key = MIME_KEYS.get(mime)
        if key is None:
            extra[mime] = value
        elif value is not None:
            line[key] = _strip_quotes(value) if key == "text" and isinstance(value, str) else value
    line["is_main_result"] = main
    line["extra"] = extra
    return line


def stream(content: dict[str, Any], header: dict[str, Any]) -> Line:
    name = "stderr" if content.get("name") == "stderr" else "stdout"
    return {"type": name, "text": str(content.get("text", "")), "timestamp": timestamp(header)}


def error(content: dict[str, Any]) -> Line:
    traceback = content.get("traceback") or []
    return {
        "type": "error",
        "name": str(content.get("ename", "Error")),
        "value": str(content.get("evalue", "")),
        "traceback": "\n".join(traceback) if isinstance(traceback, list) else str(traceback),
    }


def translate(msg: dict[str, Any]) -> Line | None:
    """The line for one iopub message of the execution, or ``None`` for bookkeeping ones."""
    kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
    content = msg.get("content", {})
    if kind == "stream":
        return stream(content, msg.get("header", {}))
    if kind == "execute_result":
        return result(content.get("data", {}), main=True)
    if kind == "display_data":
        return result(content.get("data", {}), main=False)
    if kind == "error":
        return error(content)
    if kind == "execute_input":
        return {"type": "number_of_executions", "execution_count": content.get("execution_count")}
    return None
