"""Prime egress policies (``GET``/``PUT /sandbox/{id}/egress-policy``) on the engine's E2B-shaped rules.

Prime's policy is one list: an allowlist (everything else denied; ``[]`` denies all) or a
denylist (everything else allowed; ``[]`` allows all), never both. The engine stores
``allowOut``/``denyOut``; an allowlist is ``allowOut`` plus ``denyOut: ["0.0.0.0/0"]``.
The policy is applied before the PUT answers, so ``applied`` is always true.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from sandlot.api import limits, openapi
from sandlot.api.auth import TeamId
from sandlot.api.prime import records
from sandlot.api.prime.context import prime
from sandlot.api.prime.errors import PrimeError, not_found, parse_body
from sandlot.store.models import PrimeSandbox, Sandbox

router = APIRouter(prefix="/api/v1")

EVERYWHERE = "0.0.0.0/0"


class EgressPolicyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    allowlist: limits.NetworkList | None = None
    denylist: limits.NetworkList | None = None


def stored(allowlist: list[str] | None, denylist: list[str] | None) -> dict[str, Any] | None:
    """Prime lists → the engine's egress keys (``None``: no rules, everything allowed)."""
    if allowlist is not None and denylist is not None:
        raise PrimeError(422, "network_allowlist and network_denylist are mutually exclusive; provide at most one")
    if allowlist is not None:
        return {"allowOut": list(allowlist), "denyOut": [EVERYWHERE]}
    if denylist is not None:
        return {"allowOut": [], "denyOut": list(denylist)}
    return None


def derived(box: Sandbox) -> dict[str, list[str] | None]:
    """The Prime view of an engine sandbox's rules (for sandboxes made through the E2B API)."""
    network = box.network or {}
    allow, deny = list(network.get("allowOut") or []), list(network.get("denyOut") or [])
    if box.allow_internet_access is False and not allow:
        return {"allowlist": [], "denylist": None}
    if EVERYWHERE in deny:
        return {"allowlist": allow, "denylist": None}
    if deny:
        return {"allowlist": None, "denylist": deny}
    return {"allowlist": None, "denylist": None}


def _status(policy: dict[str, list[str] | None], generation: int) -> dict[str, Any]:
    return {"policy": policy, "generation": generation, "applied_generation": generation, "applied": True}


def _current(v: records.View) -> tuple[dict[str, list[str] | None], int]:
    if v.prime is not None:
        spec = v.prime.spec or {}
        policy = {"allowlist": spec.get("networkAllowlist"), "denylist": spec.get("networkDenylist")}
        return policy, int(spec.get("egressGeneration") or 1)
    assert v.box is not None
    return derived(v.box), 1


@router.get("/sandbox/{sandbox_id}/egress-policy", responses=openapi.prime_errors(404))
async def get_policy(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        v = records.get(session, team_id, sandbox_id)
        if v is None:
            raise not_found("Sandbox", sandbox_id)
        policy, generation = _current(v)
    return _status(policy, generation)


@router.put("/sandbox/{sandbox_id}/egress-policy", responses=openapi.prime_errors(404, 409, 422),
            openapi_extra=openapi.body(EgressPolicyBody))
async def put_policy(sandbox_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    """Replace (never merge) the rules of a running sandbox; established flows are kept."""
    body = await parse_body(request, EgressPolicyBody)
    if (body.allowlist is None) == (body.denylist is None):
        raise PrimeError(422, "Provide exactly one of allowlist or denylist")
    ctx = prime(request)
    with ctx.services.db.session() as session, session.begin():
        v = records.get(session, team_id, sandbox_id)
        if v is None:
            raise not_found("Sandbox", sandbox_id)
        if v.status != "RUNNING":
            raise PrimeError(409, f"Sandbox {sandbox_id} is {v.status}: only running sandboxes take a new egress policy")
        _, generation = _current(v)
    egress = stored(body.allowlist, body.denylist)
    assert egress is not None
    # Conflict (409), InvalidRequest (422), SandboxNotFound (404): api/errors.py's PRIME_STATUS
    await ctx.services.sandboxes.update_network(team_id, sandbox_id, None, egress)
    policy = {"allowlist": body.allowlist, "denylist": body.denylist}
    with ctx.services.db.session() as session, session.begin():
        row = session.get(PrimeSandbox, sandbox_id)
        if row is not None:
            generation += 1
            row.spec = {**(row.spec or {}), "networkAllowlist": body.allowlist, "networkDenylist": body.denylist,
                        "egressGeneration": generation}
            row.updated_at = datetime.now(timezone.utc)
    return _status(policy, generation)
