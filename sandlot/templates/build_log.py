"""A build's log: lines are buffered and written to the store in small batches so
``GET .../status?logsOffset=N`` sees them live without one commit per line."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from sandlot.store import templates as template_store
from sandlot.store.database import Database

FLUSH_INTERVAL_S = 0.2
MAX_LINE = 4000


class BuildLog:
    def __init__(self, db: Database, build_id: str) -> None:
        self.db = db
        self.build_id = build_id
        self._pending: list[tuple[datetime, str, str, str | None]] = []
        self._last_flush = 0.0
        self._partial: dict[str, str] = {}
        self.tail: deque[str] = deque(maxlen=20)
        """The last output lines, for the error reason of a failed step."""

    def line(self, message: str, *, level: str = "info", step: str | None = None) -> None:
        self._pending.append((datetime.now(timezone.utc), level, message[:MAX_LINE], step))
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def output(self, stream: str, text: str, step: str | None) -> None:
        """Chunks of a command's output, split into lines (partial lines wait for the rest)."""
        data = self._partial.pop(stream, "") + text
        *lines, rest = data.split("\n")
        if rest:
            self._partial[stream] = rest
        for raw in lines:
            self._emit(raw, stream, step)

    def _emit(self, raw: str, stream: str, step: str | None) -> None:
        text = raw.rstrip("\r").rsplit("\r", 1)[-1]  # progress bars: keep the final state
        self.tail.append(text)
        self.line(text, level="info", step=step)

    def end_output(self, step: str | None) -> None:
        for stream, rest in list(self._partial.items()):
            self._emit(rest, stream, step)
        self._partial.clear()

    @contextlib.asynccontextmanager
    async def live(self) -> AsyncIterator[BuildLog]:
        """Flush every ``FLUSH_INTERVAL_S`` while a step is quiet, and once at the end."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                self.flush()

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        with self.db.session() as session, session.begin():
            template_store.append_logs(session, self.build_id, batch)
