"""``Idempotency-Key`` for sandbox creation.

The SDKs retry POSTs on 429/502/503/504 and let callers pass an idempotency
key, so a create can arrive twice. The first request with a key does the work;
a repeat (even while the first is still running) gets the same answer instead
of a second sandbox. Failures are not remembered, so a retry after an error
tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from sandlot.api.errors import APIError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class IdempotencyCache:
    def __init__(self, ttl_s: float = 24 * 3600, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, str, asyncio.Future[dict[str, Any]]]] = OrderedDict()

    @staticmethod
    def fingerprint(body: Any) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries:
            key, (created, _, _) = next(iter(self._entries.items()))
            if now - created < self.ttl_s and len(self._entries) <= self.max_entries:
                break
            self._entries.pop(key)

    async def run(
        self, team_id: str, key: str | None, fingerprint: str, produce: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        if key is None:
            return await produce()
        if not KEY_PATTERN.match(key):
            raise APIError(400, "Invalid Idempotency-Key: use 1-255 letters, digits, '-' or '_'")
        self._expire()
        slot = (team_id, key)
        existing = self._entries.get(slot)
        if existing is not None:
            _, seen_fingerprint, pending = existing
            if seen_fingerprint != fingerprint:
                raise APIError(409, "Idempotency-Key was already used with a different request body")
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._entries[slot] = (time.monotonic(), fingerprint, future)
        try:
            result = await produce()
        except BaseException as exc:
            self._entries.pop(slot, None)
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        future.set_result(result)
        return result
