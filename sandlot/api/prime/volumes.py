"""Prime volumes (``/sandbox/volumes``, ``…/volumes/{name}/publish``): a clear 400, not a wrong route's 404.

Prime's volumes are versioned by publishing a checkpoint of a mounted tree; Sandlot has no
Prime volume store yet, so every volume call says so (and ``volumes`` on create answers 400).
"""

from __future__ import annotations

from fastapi import APIRouter

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime.errors import PrimeError

router = APIRouter(prefix="/api/v1")

MESSAGE = "Sandbox volumes are not supported by this Sandlot server"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@router.api_route("/sandbox/volumes", methods=METHODS, responses=openapi.prime_errors(400), include_in_schema=False)
@router.api_route("/sandbox/volumes/{name:path}", methods=METHODS, include_in_schema=False)
@router.api_route("/sandbox/{sandbox_id}/volumes/{name:path}", methods=METHODS, include_in_schema=False)
async def unsupported(team_id: TeamId) -> None:
    raise PrimeError(400, MESSAGE)
