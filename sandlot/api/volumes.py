"""E2B's volumes: ``/volumes`` CRUD (API key) and the volume-content API (``/volumecontent/{id}/…``,
a volume token as ``Authorization: Bearer``), as the ``e2b`` SDK's ``Volume`` calls them.

The domain work is ``orchestrator/volumes.py`` (mounts, tokens) and
``orchestrator/volume_files.py`` (every file operation, through ``tenant_fs``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sandlot.api import openapi
from sandlot.api.auth import TeamId
from sandlot.api.errors import APIError
from sandlot.orchestrator import volume_files
from sandlot.orchestrator.volumes import Volumes
from sandlot.services import Services
from sandlot.store import volumes as volume_store
from sandlot.store.models import Volume

router = APIRouter()

Path_ = Annotated[str, Query(alias="path", min_length=1, max_length=4096)]
Id = Annotated[int | None, Query(ge=0, le=2**32 - 1)]
Mode = Annotated[int | None, Query(ge=0, le=0o7777)]


class NewVolume(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=128)


class MetadataUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    uid: int | None = Field(None, ge=0, le=2**32 - 1)
    gid: int | None = Field(None, ge=0, le=2**32 - 1)
    mode: int | None = Field(None, ge=0, le=0o7777)


def volumes(request: Request) -> Volumes:
    services: Services = request.app.state.services
    return services.sandboxes.volumes


def _checked_id(volume_id: str) -> str:
    if not volume_store.valid_id(volume_id):
        raise APIError(400, f"Invalid volume ID '{volume_id[:80]}': it is a UUID")
    return volume_id


def _with_token(manager: Volumes, row: Volume) -> dict[str, Any]:
    return {"volumeID": row.id, "name": row.name, "token": manager.token(row)}


# --- /volumes ---------------------------------------------------------------------------------


@router.get("/volumes", responses=openapi.errors())
async def list_volumes(request: Request, team_id: TeamId) -> list[dict[str, str]]:
    return [{"volumeID": v.id, "name": v.name} for v in volumes(request).list(team_id)]


@router.post("/volumes", status_code=201, responses=openapi.errors(507))
async def create_volume(body: NewVolume, request: Request, team_id: TeamId) -> JSONResponse:
    manager = volumes(request)
    row = await manager.create(team_id, body.name)
    return JSONResponse(_with_token(manager, row), status_code=201)


@router.get("/volumes/{volume_id}", responses=openapi.errors(400, 404))
async def get_volume(volume_id: str, request: Request, team_id: TeamId) -> dict[str, Any]:
    manager = volumes(request)
    return _with_token(manager, manager.get(team_id, _checked_id(volume_id)))


@router.delete("/volumes/{volume_id}", status_code=204, responses=openapi.errors(400, 404, 409))
async def delete_volume(volume_id: str, request: Request, team_id: TeamId) -> Response:
    await volumes(request).delete(team_id, _checked_id(volume_id))
    return Response(status_code=204)


# --- /volumecontent/{id}/… (volume token) -------------------------------------------------------


def _authorized(request: Request, volume_id: str) -> Volume:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return volumes(request).authorize(token.strip() if scheme.lower() == "bearer" else None, _checked_id(volume_id))


CONTENT_ERRORS = openapi.errors(400, 401, 404, 409, 507)


@router.get("/volumecontent/{volume_id}/path", responses=CONTENT_ERRORS)
async def stat_path(volume_id: str, path: Path_, request: Request) -> dict[str, Any]:
    volume = _authorized(request, volume_id)
    async with volumes(request).content(volume) as tree:
        return await asyncio.to_thread(tree.stat, path)


@router.patch("/volumecontent/{volume_id}/path", responses=CONTENT_ERRORS)
async def update_path(volume_id: str, path: Path_, body: MetadataUpdate, request: Request) -> dict[str, Any]:
    volume = _authorized(request, volume_id)
    async with volumes(request).content(volume) as tree:
        return await asyncio.to_thread(tree.update, path, uid=body.uid, gid=body.gid, mode=body.mode)


@router.delete("/volumecontent/{volume_id}/path", status_code=204, responses=CONTENT_ERRORS)
async def remove_path(volume_id: str, path: Path_, request: Request) -> Response:
    volume = _authorized(request, volume_id)
    async with volumes(request).content(volume) as tree:
        await asyncio.to_thread(tree.remove, path)
    return Response(status_code=204)


@router.get("/volumecontent/{volume_id}/dir", responses=CONTENT_ERRORS)
async def list_dir(volume_id: str, path: Path_, request: Request,
                   depth: Annotated[int, Query(ge=1, le=volume_files.MAX_DEPTH)] = 1) -> list[dict[str, Any]]:
    volume = _authorized(request, volume_id)
    async with volumes(request).content(volume) as tree:
        return await asyncio.to_thread(tree.list_dir, path, depth)


@router.post("/volumecontent/{volume_id}/dir", status_code=201, responses=CONTENT_ERRORS)
async def make_dir(volume_id: str, path: Path_, request: Request, uid: Id = None, gid: Id = None,
                   mode: Mode = None, force: bool = False) -> JSONResponse:
    volume = _authorized(request, volume_id)
    async with volumes(request).content(volume) as tree:
        entry = await asyncio.to_thread(tree.make_dir, path, uid=uid, gid=gid, mode=mode, force=force)
    return JSONResponse(entry, status_code=201)


@router.get("/volumecontent/{volume_id}/file", responses=CONTENT_ERRORS,
            response_class=StreamingResponse)
async def read_file(volume_id: str, path: Path_, request: Request) -> StreamingResponse:
    volume = _authorized(request, volume_id)
    manager = volumes(request)
    context = manager.content(volume)
    tree = await context.__aenter__()
    try:
        fd, size = await asyncio.to_thread(tree.open_file, path)
    except BaseException as exc:
        await context.__aexit__(type(exc), exc, exc.__traceback__)
        raise

    async def body() -> AsyncIterator[bytes]:
        # the volume stays mounted (in flight) until the last byte went out
        try:
            chunks = volume_files.read_chunks(fd)
            while chunk := await asyncio.to_thread(next, chunks, b""):
                yield chunk
        finally:
            await context.__aexit__(None, None, None)

    return StreamingResponse(body(), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


class _Pull:
    """A blocking reader over the request body, for ``tenant_fs``'s writer in a worker thread."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = request.stream().__aiter__()
        self.loop = loop

    async def _next(self) -> bytes:
        try:
            return await self.stream.__anext__()
        except StopAsyncIteration:
            return b""

    def read(self, _size: int = -1) -> bytes:
        """The next chunk as it arrived (Starlette yields ``b""`` only at the end: EOF)."""
        return asyncio.run_coroutine_threadsafe(self._next(), self.loop).result()


@router.put("/volumecontent/{volume_id}/file", status_code=201, responses=CONTENT_ERRORS,
            openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
async def write_file(volume_id: str, path: Path_, request: Request, uid: Id = None, gid: Id = None,
                     mode: Mode = None, force: bool = False) -> JSONResponse:
    volume = _authorized(request, volume_id)
    reader = _Pull(request, asyncio.get_running_loop())
    async with volumes(request).content(volume) as tree:
        entry = await asyncio.to_thread(tree.write_file, path, reader,  # type: ignore[arg-type]
                                        uid=uid, gid=gid, mode=mode, force=force)
    return JSONResponse(entry, status_code=201)
