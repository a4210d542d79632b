"""Per-sandbox lifecycle log (created, timeout, killed, …) kept on disk beside the data.

Served by ``GET /sandboxes/{id}/logs`` together with envd's own output, so an
operator can see what happened to a sandbox even across server restarts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LogEntry:
    timestamp: datetime
    level: str
    message: str
    fields: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "level": self.level,
            "message": self.message,
            "fields": self.fields,
        }


class EventLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, sandbox_id: str) -> Path:
        return self.directory / f"{sandbox_id}.jsonl"

    def record(self, sandbox_id: str, message: str, level: str = "info", **fields: object) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "level": level,
            "message": message,
            "fields": {k: str(v) for k, v in fields.items()},
        }
        with open(self._path(sandbox_id), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def read(self, sandbox_id: str) -> list[LogEntry]:
        try:
            lines = self._path(sandbox_id).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                raw = json.loads(line)
                entries.append(
                    LogEntry(datetime.fromisoformat(raw["timestamp"]), raw["level"], raw["message"], raw.get("fields", {}))
                )
            except (ValueError, KeyError):
                continue
        return entries

    def drop(self, sandbox_id: str) -> None:
        try:
            os.unlink(self._path(sandbox_id))
        except FileNotFoundError:
            pass
