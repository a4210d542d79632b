"""Team volumes: names unique per team, UUID ids, and which sandboxes or snapshots name them."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sandlot.store.models import Sandbox, Snapshot, Volume

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
"""E2B's rule (``^[a-zA-Z0-9_-]+$``), bounded."""
VOLUME_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
"""A lower-case UUID: the only shape a volume id (a host directory name) ever has."""


class InvalidVolume(ValueError):
    """A name or id outside the rules (400)."""


class VolumeConflict(Exception):
    """The name is taken in the team, or the team holds its limit of volumes."""


def valid_id(volume_id: str) -> bool:
    return bool(VOLUME_ID.match(volume_id))


def create(session: Session, team_id: str, name: str, size_mb: int, per_team: int) -> Volume:
    if not NAME.match(name):
        raise InvalidVolume(f"Invalid volume name {name[:128]!r}: use letters, digits, '_' and '-' (1-128)")
    if session.scalar(select(Volume).where(Volume.team_id == team_id, Volume.name == name)) is not None:
        raise VolumeConflict(f"Volume with name '{name}' already exists")   # E2B's or Prime's
    if per_team > 0 and len(list_for_team(session, team_id)) >= per_team:
        raise VolumeConflict(f"The team already has {per_team} volumes (the limit): delete one first")
    row = Volume(id=str(uuid.uuid4()), team_id=team_id, name=name, size_mb=size_mb)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:   # a concurrent create of the same name
        raise VolumeConflict(f"Volume with name '{name}' already exists") from None
    return row


def list_for_team(session: Session, team_id: str, kind: str = "e2b") -> list[Volume]:
    """The team's volumes of one kind (the E2B API never sees Prime's, nor Prime E2B's)."""
    return list(session.scalars(select(Volume).where(Volume.team_id == team_id, Volume.kind == kind)
                                .order_by(Volume.created_at)))


def find(session: Session, team_id: str, volume_id: str, kind: str = "e2b") -> Volume | None:
    """The team's volume by id; ``None`` for another team's, and for an id of the wrong shape."""
    if not valid_id(volume_id):
        return None
    row = session.get(Volume, volume_id)
    return row if row is not None and row.team_id == team_id and row.kind == kind else None


def find_by_name(session: Session, team_id: str, name: str, kind: str = "e2b") -> Volume | None:
    return session.scalar(select(Volume).where(Volume.team_id == team_id, Volume.name == name, Volume.kind == kind))


def get(session: Session, volume_id: str) -> Volume | None:
    return session.get(Volume, volume_id) if valid_id(volume_id) else None


def mounted_ids(mounts: list[dict[str, str]] | None) -> set[str]:
    return {m["volumeID"] for m in mounts or [] if "volumeID" in m}


def sandboxes_using(session: Session, volume_id: str) -> list[Sandbox]:
    """Sandboxes (any state: a paused one mounts it again at resume) that name the volume.

    A linear scan of live rows' JSON: portable SQL, and live sandboxes are few."""
    rows = session.scalars(select(Sandbox).where(Sandbox.volume_mounts.is_not(None)))
    return [row for row in rows if volume_id in mounted_ids(row.volume_mounts)]


def snapshots_using(session: Session, volume_id: str) -> list[Snapshot]:
    rows = session.scalars(select(Snapshot).where(Snapshot.volume_mounts.is_not(None)))
    return [row for row in rows if volume_id in mounted_ids(row.volume_mounts)]


def delete(session: Session, row: Volume) -> None:
    session.delete(row)
