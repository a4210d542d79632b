"""``GET .../read-file``: a text window of a sandbox file, fetched from envd with an HTTP Range.

``offset``/``length`` pick the window (negative offset = that many bytes from the end); reads
larger than ``READ_FILE_MAX_BYTES`` answer 413, which the SDK raises as ``SandboxFileTooLargeError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx
from starlette.responses import JSONResponse, Response

READ_FILE_MAX_BYTES = 16 * 1024 * 1024
"""Above the SDK's 10 MiB background-job tail window, small enough to hold in memory."""

_TOTAL = re.compile(r"/(\d+)$")


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    return int(raw) if raw not in (None, "") else None


async def read_window(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], user: str, params: Mapping[str, str]
) -> Response:
    path = params.get("path", "")
    if not path:
        return _error(400, "bad_request", "path query parameter is required")
    try:
        offset, length = _int(params, "offset"), _int(params, "length")
    except ValueError:
        return _error(400, "bad_request", "offset and length must be integers")
    if length is not None and length < 0:
        return _error(400, "bad_request", "length must not be negative")
    windowed = offset is not None or length is not None
    want = length if length is not None else READ_FILE_MAX_BYTES + (0 if windowed else 1)
    if offset is not None and offset < 0:
        want = min(want, -offset)
        span = f"bytes=-{-offset}"
    else:
        start = offset or 0
        span = f"bytes={start}-{start + max(want, 1) - 1}"
    if windowed and want > READ_FILE_MAX_BYTES:
        return _error(413, "file_too_large", f"windows are limited to {READ_FILE_MAX_BYTES} bytes")
    response = await client.get(url, params={"path": path, "username": user}, headers={**headers, "Range": span})
    if response.status_code == 416:
        match = _TOTAL.search(response.headers.get("content-range", ""))
        total = int(match.group(1)) if match else 0
        return JSONResponse({"content": "", "size": 0, "total_size": total, "offset": total, "truncated": total > 0})
    if response.status_code not in (200, 206):
        return _error(response.status_code, "read_failed", response.text)
    data = response.content
    match = _TOTAL.search(response.headers.get("content-range", ""))
    total = int(match.group(1)) if match else len(data)
    start = total - len(data) if offset is not None and offset < 0 else (offset or 0)
    if not windowed and total > READ_FILE_MAX_BYTES:
        return _error(413, "file_too_large", f"{path} is {total} bytes; the limit is {READ_FILE_MAX_BYTES} (use offset/length)")
    data = data[:want]
    return JSONResponse(
        {
            "content": data.decode("utf-8", "replace"),
            "size": len(data),
            "total_size": total,
            "offset": start,
            "truncated": start > 0 or start + len(data) < total,
        }
    )
