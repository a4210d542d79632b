"""The pause image a sandbox row points at, and moving a paused row to another node (issue 17).

Neither touches ``state`` (the Lifecycle's alone): the image is what a resume elsewhere needs,
the node is where the sandbox's traffic goes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from sandlot.store.models import Sandbox


def set_image(session: Session, sandbox_id: str, image: dict[str, Any] | None) -> None:
    row = session.get(Sandbox, sandbox_id)
    if row is not None:
        row.pause_image = image


def claim(session: Session, sandbox_id: str, from_node: str | None, to_node: str) -> bool:
    """Move a paused row from ``from_node`` to ``to_node``; ``False`` if it is no longer paused
    there (another node adopted it first, or it was killed): one conditional UPDATE, so two
    nodes adopting the same sandbox at once cannot both win."""
    result = session.execute(
        update(Sandbox)
        .where(Sandbox.id == sandbox_id, Sandbox.state == "paused",
               Sandbox.node_id.is_(None) if from_node is None else Sandbox.node_id == from_node)
        .values(node_id=to_node)
        .execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0) == 1)
