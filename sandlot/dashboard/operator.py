"""The operator page: the server's health, sandboxes and builds by state, warm pools, host
capacity and disk. Only a session signed in with the operator token (``SANDLOT_ADMIN_TOKEN``)
sees it; the numbers are the API's own (``GET /admin/status``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from sandlot.api.operator import server_status
from sandlot.dashboard import common
from sandlot.dashboard.sessions import DashSession

router = APIRouter()


@router.get("/operator")
async def operator_page(request: Request, dash: DashSession = Depends(common.operator_session)) -> Response:
    status = await asyncio.to_thread(server_status, common.services(request), request.app.state.health)
    return common.render(request, "operator.html", {"page": "operator", "s": status})
