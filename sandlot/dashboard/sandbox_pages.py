"""Sandboxes: the live list, a sandbox's page (metrics, lifecycle logs, files) and its buttons.

Buttons call the same ``SandboxManager`` methods as the API routes (never HTTP to itself);
their domain errors become a message on the page.
"""

from __future__ import annotations

from typing import Any

from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.requests import HTTPConnection
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from sandlot.api.errors import APIError, domain_message
from sandlot.api.sandboxes import checked_timeout, parse_metadata_filter
from sandlot.dashboard import common
from sandlot.dashboard.envd_bridge import Envd, EnvdError
from sandlot.dashboard.sessions import DashSession
from sandlot.orchestrator.errors import SandboxError
from sandlot.quotas import QuotaExceeded, reserve_snapshot
from sandlot.store import sandboxes as sandbox_store
from sandlot.store import snapshots as snapshot_store
from sandlot.store.models import Sandbox

router = APIRouter()
MAX_UPLOAD = 100 * 1024 * 1024
"""One upload through the dashboard (the SDK has no such limit: it talks to envd directly)."""

Team = Depends(common.team_session)


def envd_of(request: HTTPConnection, row: Sandbox) -> Envd:
    """The running sandbox's envd, reached with its own access token; 409 when not running."""
    route = common.services(request).sandboxes.route(row.id)
    if route is None or row.state != "running":
        raise HTTPException(409, f"Sandbox '{row.id}' is {row.state}: resume it to use its terminal and files")
    manager = common.services(request).sandboxes
    return Envd(route.ip, manager.settings.envd_port, route.access_token, manager.envd.http)


def _metrics(request: Request, row: Sandbox) -> dict[str, Any] | None:
    sample = common.services(request).sandboxes.metrics.latest(row.id)
    return sample.to_json() if sample is not None else None


@router.get("/sandboxes")
async def sandboxes_page(request: Request, dash: DashSession = Team) -> Response:
    return common.render(request, "sandboxes.html", {"page": "sandboxes", "query": request.url.query,
                                                     "state": request.query_params.get("state", ""),
                                                     "metadata": request.query_params.get("metadata", "")})


@router.get("/sandboxes/list")
async def sandboxes_list(request: Request, state: str = "", metadata: str = "", dash: DashSession = Team) -> Response:
    states = [state] if state in ("running", "paused") else ["running", "paused"]
    error = None
    try:
        filters = parse_metadata_filter("&".join(p.strip() for p in metadata.split(",") if p.strip()))
    except APIError as exc:
        filters, error = {}, exc.message
    with common.services(request).db.session() as session:
        rows, _ = sandbox_store.page(session, common.team_id(dash), states=states, metadata=filters,
                                     ascending=False, limit=500, after=None)
    items = [{"row": r, "metrics": _metrics(request, r)} for r in rows]
    return common.render(request, "sandbox_rows.html", {"items": items, "error": error})


@router.get("/sandboxes/{sandbox_id}")
async def sandbox_page(sandbox_id: str, request: Request, dash: DashSession = Team) -> Response:
    row = common.owned(request, dash, sandbox_id)
    manager = common.services(request).sandboxes
    events = await manager.lifecycle_events.page(common.team_id(dash), sandbox_id=row.id, offset=0, limit=50,
                                                 order_asc=False, types=[])
    logs = manager.events.read(row.id)[-200:]
    with common.services(request).db.session() as session:
        snaps, _ = snapshot_store.page(session, common.team_id(dash), sandbox_id=row.id, name=None, limit=20, after=None)
    return common.render(request, "sandbox.html", {"page": "sandboxes", "row": row, "events": events, "logs": logs,
                                                   "snapshots": snaps, "metrics": _metrics(request, row)})


@router.get("/sandboxes/{sandbox_id}/metrics.json")
async def sandbox_metrics(sandbox_id: str, request: Request, dash: DashSession = Team) -> Response:
    row = common.owned(request, dash, sandbox_id)
    sampler = common.services(request).sandboxes.metrics
    if sampler.latest(row.id) is None and row.state == "running":
        await sampler.sample_now(row.id)
    return JSONResponse([s.to_json() for s in sampler.series(row.id)])


async def _act(request: Request, dash: DashSession, row: Sandbox, done: str, action: Any) -> Response:
    try:
        await action
        common.flash(dash, done)
    except (SandboxError, QuotaExceeded, APIError) as exc:
        message = exc.message if isinstance(exc, APIError) else domain_message(exc)
        common.flash(dash, message, error=True)
    target = "/dashboard/sandboxes" if done.endswith("killed") else f"/dashboard/sandboxes/{row.id}"
    return RedirectResponse(target, status_code=303)


@router.post("/sandboxes/{sandbox_id}/{action}")
async def sandbox_action(sandbox_id: str, action: str, request: Request, dash: DashSession = Team) -> Response:
    await common.check_csrf(request, dash)
    row = common.owned(request, dash, sandbox_id)
    manager = common.services(request).sandboxes
    team = common.team_id(dash)
    form = await request.form()
    if action == "pause":
        return await _act(request, dash, row, "Paused", manager.pause(team, row.id))
    if action == "resume":
        timeout = checked_timeout(request, None)
        return await _act(request, dash, row, "Resumed", manager.resume(team, row.id, timeout))
    if action == "kill":
        return await _act(request, dash, row, f"Sandbox {row.id} killed", manager.kill(team, row.id))
    if action == "extend":
        try:
            seconds = checked_timeout(request, int(str(form.get("seconds") or "300")))
        except (ValueError, APIError) as exc:
            common.flash(dash, getattr(exc, "message", "seconds must be a whole number"), error=True)
            return RedirectResponse(f"/dashboard/sandboxes/{row.id}", status_code=303)
        return await _act(request, dash, row, f"Timeout set to {seconds}s from now",
                          manager.set_timeout(team, row.id, seconds))
    if action == "snapshot":
        name = str(form.get("name") or "").strip()[:255] or None
        return await _act(request, dash, row, "Snapshot taken", _snapshot(request, team, row.id, name))
    raise HTTPException(404, "Unknown action")


async def _snapshot(request: Request, team: str, sandbox_id: str, name: str | None) -> None:
    services = common.services(request)
    with services.db.session() as session, session.begin():
        if not (name and snapshot_store.resolve(session, team, name)):
            reserve_snapshot(session, services.settings, team)
    await services.sandboxes.snapshot(team, sandbox_id, name, True)


# --- files ----------------------------------------------------------------------------------


def _clean_path(path: str) -> str:
    if "\x00" in path or len(path) > 4096:
        raise HTTPException(400, "Invalid path")
    return path or "/home/user"


@router.get("/sandboxes/{sandbox_id}/files")
async def files(sandbox_id: str, request: Request, path: str = "/home/user", dash: DashSession = Team) -> Response:
    row = common.owned(request, dash, sandbox_id)
    path = _clean_path(path)
    entries: list[dict[str, Any]] = []
    error = None
    try:
        entries = await envd_of(request, row).list_dir(path)
    except EnvdError as exc:
        error = str(exc)
    except HTTPException as exc:
        error = str(exc.detail)
    parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
    return common.render(request, "files.html", {"row": row, "path": path, "parent": parent,
                                                 "entries": entries, "error": error})


@router.get("/sandboxes/{sandbox_id}/files/download")
async def download(sandbox_id: str, request: Request, path: str, dash: DashSession = Team) -> Response:
    row = common.owned(request, dash, sandbox_id)
    envd = envd_of(request, row)
    upstream = await envd.http.send(envd.download(_clean_path(path)), stream=True)
    if upstream.status_code != 200:
        text = (await upstream.aread())[:300].decode(errors="replace")
        await upstream.aclose()
        raise HTTPException(upstream.status_code if upstream.status_code < 500 else 502, text)
    name = path.rstrip("/").rsplit("/", 1)[-1] or "download"
    safe = "".join(c for c in name if c.isalnum() or c in "._-") or "download"

    async def body() -> Any:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{safe}"'})


@router.post("/sandboxes/{sandbox_id}/files/upload")
async def upload(sandbox_id: str, request: Request, dash: DashSession = Team) -> Response:
    await common.check_csrf(request, dash)
    row = common.owned(request, dash, sandbox_id)
    form = await request.form()
    directory = _clean_path(str(form.get("dir") or "/home/user"))
    item = form.get("file")
    if not isinstance(item, UploadFile) or not item.filename:
        raise HTTPException(400, "Choose a file to upload")
    data = await item.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise HTTPException(413, f"Uploads through the dashboard are limited to {MAX_UPLOAD // 2**20} MiB")
    name = item.filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise HTTPException(400, "Invalid file name")
    try:
        await envd_of(request, row).upload(f"{directory.rstrip('/')}/{name}", data)
        common.flash(dash, f"Uploaded {name} ({len(data)} bytes) to {directory}")
    except EnvdError as exc:
        common.flash(dash, f"Upload failed: {exc}", error=True)
    return RedirectResponse(f"/dashboard/sandboxes/{row.id}?dir={quote(directory)}#files", status_code=303)

