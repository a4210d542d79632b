"""Who may use the gateway for which sandbox, and whether that sandbox can take traffic now."""

from __future__ import annotations

from typing import Literal

from sandlot.api.prime import records
from sandlot.api.prime.context import PrimeContext
from sandlot.api.prime.envd import PRIME_DEFAULT_USER
from sandlot.api.prime.tokens import GatewayClaims
from sandlot.proxy.routes import Route
from sandlot.store.models import PrimeSandbox

GATEWAY_SANDBOX_HEADER = "x-sandlot-gateway-sandbox"
"""Set by the gateway (never by clients: it strips theirs) once the bearer token checked out."""

Problem = Literal["sandbox_not_ready", "sandbox_terminated", "sandbox_not_found"]


def bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def check_token(prime: PrimeContext, token: str | None, user_ns: str, job_id: str) -> GatewayClaims | None:
    """Claims when the token is valid and scoped to exactly this ``{user_ns}/{job_id}``."""
    if not token:
        return None
    claims = prime.signer.verify(token)
    if claims is None or claims.sandbox_id != job_id or claims.team_id != user_ns:
        return None
    return claims


def sandbox_route(prime: PrimeContext, sandbox_id: str) -> tuple[Route | None, Problem | None]:
    route = prime.services.sandboxes.route(sandbox_id)
    if route is not None and route.state == "running":
        return route, None
    with prime.services.db.session() as session, session.begin():
        v = records.view(session, sandbox_id)
        status = v.status if v is not None else None
    if status is None:
        return None, "sandbox_not_found"
    if status in records.TERMINAL:
        return None, "sandbox_terminated"
    return None, "sandbox_not_ready"


def sandbox_defaults(prime: PrimeContext, sandbox_id: str) -> tuple[str, str | None]:
    """Default user and cwd of gateway calls: the image's USER/WORKDIR, else root (Docker's default)."""
    with prime.services.db.session() as session:
        row = session.get(PrimeSandbox, sandbox_id)
        spec = (row.spec or {}) if row is not None else {}
    return spec.get("defaultUser") or PRIME_DEFAULT_USER, spec.get("defaultWorkdir")
