"""Workload identity's public documents (E2B ``iam``): OIDC discovery and the JWKS of the key
that signs sandboxes' JWT-SVIDs, unauthenticated so an audience (e.g. an AWS IAM OIDC
provider) can fetch them. Only the public key is here; tokens are minted by the egress proxy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from sandlot.egress.identity import DISCOVERY_PATH, JWKS_PATH
from sandlot.services import Services

router = APIRouter()


@router.get(DISCOVERY_PATH, include_in_schema=False)
async def openid_configuration(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return services.sandboxes.network.identity.discovery()


@router.get(JWKS_PATH, include_in_schema=False)
async def jwks(request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    return services.sandboxes.network.identity.jwks()
