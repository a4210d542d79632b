"""The orchestrator's view of a sandbox's envd: is it up yet?"""

from __future__ import annotations

import asyncio
import time

import httpx


async def wait_healthy(client: httpx.AsyncClient, ip: str, port: int, timeout_s: float) -> None:
    """Poll ``GET /health`` until envd answers 2xx; raise ``TimeoutError`` otherwise."""
    deadline = time.monotonic() + timeout_s
    url = f"http://{ip}:{port}/health"
    delay = 0.002
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = await client.get(url, timeout=1.0)
            if response.status_code < 300:
                return
        except httpx.HTTPError as exc:
            last_error = exc
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    raise TimeoutError(f"envd did not become healthy within {timeout_s:.0f}s ({last_error!r})")
