"""Dashboard sign-in sessions, kept server-side.

The browser holds only a random session id (HttpOnly, SameSite=Strict cookie); the API key it
signed in with never leaves the sign-in POST: the session keeps the key's row id, so revoking
that key ends every session made with it. Each session has its own CSRF token, checked on
every state-changing request. Sessions live in this process's memory: a server restart signs
everyone out (the dashboard is served by one process).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

COOKIE = "sandlot_dash"
TTL_S = 12 * 3600
"""A session ends this long after its last use."""
MAX_SESSIONS = 10_000


@dataclass
class DashSession:
    team_id: str | None
    """The signed-in team; ``None`` for an operator session."""
    key_id: str | None
    """The API key row the team signed in with (its revocation ends the session)."""
    operator: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_used: float = field(default_factory=time.monotonic)
    flash: tuple[str, bool] | None = None
    """A message (and whether it is an error) for the next page: an action's outcome."""
    new_key: str | None = None
    """A key just created, shown once on the next team page (never put in a URL)."""

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, DashSession] = {}
        self._lock = threading.Lock()

    def create(self, session: DashSession) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._sessions[sid] = session
        return sid

    def get(self, sid: str | None) -> DashSession | None:
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
            if found is None:
                return None
            now = time.monotonic()
            if now - found.last_used > TTL_S:
                del self._sessions[sid]
                return None
            found.last_used = now
            return found

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _prune(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if now - v.last_used > TTL_S]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:   # oldest first
            oldest = min(self._sessions, key=lambda s: self._sessions[s].last_used)
            del self._sessions[oldest]
