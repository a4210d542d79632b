"""The browser terminal: xterm.js over a WebSocket, bridged to a PTY that envd runs in the sandbox.

The WebSocket is opened by the page with the session cookie (SameSite=Strict); the server also
checks its ``Origin`` (cross-site WebSocket hijacking) and wants the session's CSRF token as the
first message before it starts anything. The envd token stays on the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect

from sandlot.dashboard import common
from sandlot.dashboard.envd_bridge import Envd, EnvdError
from sandlot.dashboard.sandbox_pages import envd_of
from sandlot.orchestrator.errors import SandboxNotFound

router = APIRouter()
log = structlog.get_logger("sandlot.dashboard")

MAX_INPUT = 64 * 1024


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    host = ws.headers.get("host")
    return origin is not None and host is not None and origin.split("://", 1)[-1] == host


def _size(value: Any, default: int, top: int) -> int:
    return max(1, min(int(value), top)) if isinstance(value, int) else default


@router.websocket("/sandboxes/{sandbox_id}/terminal")
async def terminal(ws: WebSocket, sandbox_id: str) -> None:
    dash = common.current(ws)
    if dash is None or dash.team_id is None or not _same_origin(ws):
        await ws.close(code=4401)
        return
    await ws.accept()
    try:
        hello = json.loads(await asyncio.wait_for(ws.receive_text(), timeout=10))
    except (asyncio.TimeoutError, ValueError, WebSocketDisconnect):
        await ws.close(code=4403)
        return
    if not isinstance(hello, dict) or not dash.csrf_ok(hello.get("csrf") if isinstance(hello.get("csrf"), str) else None):
        await ws.close(code=4403)
        return
    try:
        row = common.services(ws).sandboxes.owned(dash.team_id, sandbox_id.split("-", 1)[0][:64])
        envd = envd_of(ws, row)
    except SandboxNotFound:
        await ws.close(code=4404)
        return
    except HTTPException as exc:
        await ws.send_text(f"\r\n{exc.detail}\r\n")
        await ws.close(code=4409)
        return
    await _bridge(ws, envd, _size(hello.get("cols"), 80, 500), _size(hello.get("rows"), 24, 200))


async def _bridge(ws: WebSocket, envd: Envd, cols: int, rows: int) -> None:
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def output() -> None:
        try:
            async for event in envd.pty(cols, rows):
                if "start" in event and not pid.done():
                    pid.set_result(int(event["start"].get("pid", 0)))
                data = event.get("data", {}).get("pty")
                if data:
                    await ws.send_bytes(base64.b64decode(data))
                if "end" in event:
                    break
        except EnvdError as exc:
            await ws.send_text(f"\r\n[terminal error: {exc}]\r\n")
        with contextlib.suppress(Exception):
            await ws.send_text("\r\n[session ended]\r\n")
            await ws.close()

    async def input_() -> None:
        process = await pid
        while True:
            message = json.loads(await ws.receive_text())
            if not isinstance(message, dict):
                continue
            if message.get("type") == "input" and isinstance(message.get("data"), str):
                await envd.pty_input(process, message["data"].encode()[:MAX_INPUT])
            elif message.get("type") == "resize":
                await envd.pty_resize(process, _size(message.get("cols"), cols, 500), _size(message.get("rows"), rows, 200))

    reader = asyncio.create_task(output())
    writer = asyncio.create_task(input_())
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, writer):
            task.cancel()
        for task in (reader, writer):
            with contextlib.suppress(BaseException):
                await task
        if pid.done() and not pid.cancelled():
            with contextlib.suppress(Exception):
                await envd.kill(pid.result())   # the shell goes with the browser tab
        log.info("dashboard terminal closed")
