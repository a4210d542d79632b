"""How the Prime façade names a sandbox's end (pure derivation, no server)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sandlot.api.prime.records import _derive
from sandlot.store.models import PrimeSandbox, Sandbox


def _pair(state: str, minutes_ago: float) -> tuple[PrimeSandbox, Sandbox, datetime]:
    now = datetime.now(timezone.utc)
    started = now - timedelta(minutes=minutes_ago)
    prime = PrimeSandbox(id="s1", status="RUNNING", timeout_minutes=1, created_at=started, started_at=started)
    return prime, Sandbox(id="s1", state=state), now


def test_a_timeouts_kill_in_progress_is_a_timeout() -> None:
    """The reaper marks the row ``killing`` while it tears the sandbox down; a poll in that
    window must not record the end as TERMINATED."""
    prime, box, now = _pair("killing", minutes_ago=1.01)
    assert _derive(prime, box, now)[:2] == ("TIMEOUT", "TIMEOUT")
    assert _derive(prime, None, now)[:2] == ("TIMEOUT", "TIMEOUT")


def test_a_kill_before_the_deadline_is_terminated_and_running_is_running() -> None:
    prime, box, now = _pair("killing", minutes_ago=0.2)
    assert _derive(prime, box, now)[0] == "TERMINATED"
    prime, box, now = _pair("running", minutes_ago=5)
    assert _derive(prime, box, now)[0] == "RUNNING"
