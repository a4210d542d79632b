"""Per-team quotas: running sandboxes, snapshots, running builds, stored upload bytes.

Counting and inserting happen in one transaction that first takes the team's row lock
(an ``UPDATE teams`` of the team's own row): on PostgreSQL that is a row lock held until
commit, on SQLite it takes the database's write lock before the count is read. Two
creates of one team therefore never both see "one slot left", whatever the number of
API processes sharing the database. Only uploads are metered in-process (their bytes
land on this server's disk; see :class:`UploadMeter`).

Over quota is a 429 with E2B's message for its concurrent-sandbox limit (the SDK raises
``RateLimitException``); the Prime façade answers the same message in Prime's shape.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from sandlot.settings import Settings
from sandlot.store.models import Build, PrimeImageBuild, PrimeSandbox, Sandbox, Snapshot, Team, Template

NOT_RUNNING = ("paused", "killing")
"""Sandbox states that do not hold a slot: E2B counts running sandboxes only. A ``killing``
sandbox's processes are dead already; only its teardown may still run (``SandboxManager.destroy``),
and a kill answered 204 must free the slot for the next create."""
CONTACT = "If you need more, ask the operator of this Sandlot server to raise SANDLOT_QUOTA_{name}"
NO_RETRY = {"Should-Retry": "false"}
"""The SDK retries 429s without this header; a quota does not clear in its 0.1-10 s back-off."""


class QuotaExceeded(Exception):
    """A team is at one of its limits. The ``reserve_*`` functions raise ``error(429, message)``,
    this by default; callers pass their own layer's error (``SandboxError``, ``PrimeError``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


ErrorFactory = Callable[[int, str], Exception]


KINDS = ("concurrent_sandboxes", "snapshots", "concurrent_builds", "upload_bytes")
"""Keys of ``teams.quotas`` overrides, each a ``SANDLOT_QUOTA_*`` setting."""


def team_limit(session: Session, settings: Settings, team_id: str, kind: str) -> int:
    """The team's limit of ``kind``: its override (``sandlot keys quota``), else the setting; 0 = none."""
    team = session.get(Team, team_id)
    overrides = (team.quotas or {}) if team is not None else {}
    value = overrides.get(kind)
    return int(value) if value is not None else int(getattr(settings, f"quota_{kind}"))


def lock_team(session: Session, team_id: str) -> None:
    """Serialize quota decisions of one team until the transaction ends (see module doc)."""
    stmt = update(Team).where(Team.id == team_id).values(name=Team.name)
    session.execute(stmt.execution_options(synchronize_session=False))


def running_sandboxes(session: Session, team_id: str, exclude_id: str | None = None) -> int:
    """Sandboxes holding a slot: every state but paused and killing, plus Prime creates still ``PENDING``
    (answered 201 before their sandbox row exists, e.g. while an image is pulled)."""
    rows = session.scalar(
        select(func.count()).select_from(Sandbox).where(Sandbox.team_id == team_id, Sandbox.state.notin_(NOT_RUNNING))
    ) or 0
    pending = select(func.count()).select_from(PrimeSandbox).where(
        PrimeSandbox.team_id == team_id,
        PrimeSandbox.status == "PENDING",
        PrimeSandbox.id.notin_(select(Sandbox.id).where(Sandbox.team_id == team_id)),
    )
    if exclude_id is not None:
        pending = pending.where(PrimeSandbox.id != exclude_id)
    return rows + (session.scalar(pending) or 0)


def reserve_sandbox(session: Session, settings: Settings, team_id: str, sandbox_id: str | None = None, *,
                    error: ErrorFactory = QuotaExceeded) -> None:
    """Raise :class:`QuotaExceeded` unless the team may start one more sandbox; the caller
    inserts its row (or PENDING Prime row) in the same transaction. ``sandbox_id``: a
    pre-assigned id whose PENDING Prime row already holds the slot being used."""
    lock_team(session, team_id)
    most = team_limit(session, settings, team_id, "concurrent_sandboxes")
    if most <= 0:
        return
    if running_sandboxes(session, team_id, sandbox_id) >= most:
        raise error(
            429, f"you have reached the maximum number of concurrent E2B sandboxes ({most}). "
            + CONTACT.format(name="CONCURRENT_SANDBOXES")
        )


def check_sandbox_quota(session: Session, settings: Settings, team_id: str, *,
                        error: ErrorFactory = QuotaExceeded) -> None:
    """``reserve_sandbox``'s refusal without its lock (a read): lets a create say 429 before it
    uses anything up (a warm-pool sandbox), deciding again under the lock when it inserts."""
    most = team_limit(session, settings, team_id, "concurrent_sandboxes")
    if most > 0 and running_sandboxes(session, team_id) >= most:
        raise error(
            429, f"you have reached the maximum number of concurrent E2B sandboxes ({most}). "
            + CONTACT.format(name="CONCURRENT_SANDBOXES")
        )


def reserve_snapshot(session: Session, settings: Settings, team_id: str, *, error: ErrorFactory = QuotaExceeded) -> None:
    lock_team(session, team_id)
    most = team_limit(session, settings, team_id, "snapshots")
    if most <= 0:
        return
    count = session.scalar(select(func.count()).select_from(Snapshot).where(Snapshot.team_id == team_id)) or 0
    if count >= most:
        raise error(
            429, f"you have reached the maximum number of snapshots ({most}); delete some first. "
            + CONTACT.format(name="SNAPSHOTS")
        )


def running_builds(session: Session, team_id: str) -> int:
    stmt = (
        select(func.count()).select_from(Build).join(Template, Template.id == Build.template_id)
        .where(Template.team_id == team_id, Build.status == "building")
    )
    return session.scalar(stmt) or 0


def reserve_build(session: Session, settings: Settings, team_id: str, *, error: ErrorFactory = QuotaExceeded) -> None:
    """Before a build goes ``waiting → building`` in this transaction."""
    lock_team(session, team_id)
    most = team_limit(session, settings, team_id, "concurrent_builds")
    if most <= 0:
        return
    if running_builds(session, team_id) >= most:
        raise error(
            429, f"you have reached the maximum number of concurrent template builds ({most}); "
            "wait for one to finish. " + CONTACT.format(name="CONCURRENT_BUILDS")
        )


# --- upload bytes ------------------------------------------------------------------------------


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(".part"):
                continue  # an upload in flight: counted by UploadMeter until it is complete
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def stored_upload_bytes(session: Session, settings: Settings, team_id: str) -> int:
    """COPY archives in the builder's per-team upload dir plus the team's Prime build contexts."""
    total = _dir_bytes(settings.templates_dir / "files" / team_id)
    contexts = settings.data_dir / "prime" / "contexts"
    for build_id in session.scalars(select(PrimeImageBuild.id).where(PrimeImageBuild.team_id == team_id)):
        try:
            total += (contexts / f"{build_id}.tar.gz").stat().st_size
        except OSError:
            pass
    return total


def upload_budget(session: Session, settings: Settings, team_id: str) -> tuple[int, int]:
    """``(stored bytes, limit)`` for :meth:`UploadMeter.metered`."""
    return stored_upload_bytes(session, settings, team_id), team_limit(session, settings, team_id, "upload_bytes")


class UploadMeter:
    """Stops a team's upload stream once stored + in-flight bytes would pass its quota.

    In flight bytes are counted per process: uploads are written to this server's own
    disk, so the process that receives them is the one whose disk they fill."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    def message(self, limit: int) -> str:
        return (f"you have reached the maximum number of bytes of uploaded build files ({limit}); "
                + CONTACT.format(name="UPLOAD_BYTES"))

    async def metered(self, team_id: str, stored: int, limit: int, chunks: AsyncIterator[bytes], *,
                      error: ErrorFactory = QuotaExceeded) -> AsyncIterator[bytes]:
        """``chunks`` passed through; ``error(429, …)`` as soon as the quota would be passed
        (``limit`` 0 = unlimited)."""
        mine = 0
        try:
            async for chunk in chunks:
                if limit > 0:
                    others = self._in_flight.get(team_id, 0) - mine
                    if stored + others + mine + len(chunk) > limit:
                        raise error(429, self.message(limit))
                mine += len(chunk)
                self._in_flight[team_id] = self._in_flight.get(team_id, 0) + len(chunk)
                yield chunk
        finally:
            left = self._in_flight.get(team_id, 0) - mine
            if left > 0:
                self._in_flight[team_id] = left
            else:
                self._in_flight.pop(team_id, None)


UPLOADS = UploadMeter()
