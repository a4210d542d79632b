"""The Prime data plane at ``{server}/gateway/{user_ns}/{job_id}/...``: Connect exec and file routes.

Every request carries ``Authorization: Bearer <sandbox token>``; the token (signed, no DB lookup)
must name exactly this ``{user_ns}/{job_id}``. Failures use the statuses the Prime SDK acts on:
401 re-auth, 409 not ready (retried), 410 ``sandbox_terminated``, 502 ``sandbox_not_found``.
"""

from __future__ import annotations

from datetime import datetime, timezone
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sandlot.api.prime.command_session import CommandSessionService
from sandlot.api.prime.context import PrimeContext
from sandlot.api.prime.gateway_auth import GATEWAY_SANDBOX_HEADER, bearer, check_token, sandbox_defaults, sandbox_route
from sandlot.api.prime.gen.command_session.command_session_connect import CommandSessionASGIApplication
from sandlot.api.prime.read_file import read_window
from sandlot.proxy.routes import Route

RPC_PREFIX = "command_session.CommandSession/"
_STATUS = {"sandbox_not_ready": 409, "sandbox_terminated": 410, "sandbox_not_found": 502}


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


class Gateway:
    """ASGI app; mount it at ``/gateway`` of the API server."""

    def __init__(self, prime: PrimeContext) -> None:
        self.prime = prime
        self.rpc = CommandSessionASGIApplication(CommandSessionService(prime), compressions=())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        parts = path.lstrip("/").split("/", 2)
        if len(parts) != 3:
            return await _error(404, "not_found", "expected /{user_ns}/{job_id}/{operation}")(scope, receive, send)
        user_ns, job_id, operation = parts
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        claims = check_token(self.prime, bearer(headers), user_ns, job_id)
        if operation.startswith(RPC_PREFIX):
            forwarded = [(k, v) for k, v in scope.get("headers", []) if k.lower() != GATEWAY_SANDBOX_HEADER.encode()]
            if claims is not None:
                forwarded.append((GATEWAY_SANDBOX_HEADER.encode(), job_id.encode()))
            inner = dict(scope, path="/" + operation, raw_path=("/" + operation).encode(), root_path="", headers=forwarded)
            return await self.rpc(inner, receive, send)
        if claims is None:
            return await _error(401, "unauthorized", "missing, invalid or expired sandbox token")(scope, receive, send)
        handler = {
            ("POST", "upload"): self.upload,
            ("GET", "download"): self.download,
            ("GET", "read-file"): self.read_file,
        }.get((scope["method"], operation))
        if handler is None:
            return await _error(404, "not_found", f"unknown gateway operation {scope['method']} {operation}")(scope, receive, send)
        route, problem = sandbox_route(self.prime, job_id)
        if route is None:
            assert problem is not None
            return await _error(_STATUS[problem], problem, f"sandbox {job_id}: {problem}")(scope, receive, send)
        user, _ = sandbox_defaults(self.prime, job_id)
        response = await handler(Request(scope, receive), route, user)
        await response(scope, receive, send)

    def _files(self, route: Route, user: str) -> tuple[str, dict[str, str]]:
        envd = self.prime.envd
        return f"{envd.base_url(route)}/files", envd.headers(route, user)

    async def upload(self, request: Request, route: Route, user: str) -> Response:
        path = request.query_params.get("path")
        if not path:
            return _error(400, "bad_request", "path query parameter is required")
        form = await request.form(max_part_size=1 << 40)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(400, "bad_request", "multipart field 'file' is required")
        content = await upload.read()
        url, headers = self._files(route, user)
        try:
            response = await self.prime.envd.http.post(
                url, params={"path": path, "username": user}, headers=headers, files={"file": (upload.filename or "file", content)}
            )
        except httpx.HTTPError as exc:
            return _error(502, "sandbox_unreachable", f"envd did not answer: {exc}")
        if response.status_code != 200:
            return _error(response.status_code, "upload_failed", response.text)
        written = response.json()
        final = written[0]["path"] if written else path
        return JSONResponse(
            {"success": True, "path": final, "size": len(content), "timestamp": datetime.now(timezone.utc).isoformat()}
        )

    async def download(self, request: Request, route: Route, user: str) -> Response:
        path = request.query_params.get("path", "")
        url, headers = self._files(route, user)
        client = self.prime.envd.http
        upstream = await client.send(client.build_request("GET", url, params={"path": path, "username": user}, headers=headers), stream=True)
        if upstream.status_code != 200:
            body = await upstream.aread()
            await upstream.aclose()
            return _error(upstream.status_code, "download_failed", body.decode("utf-8", "replace"))
        return StreamingResponse(
            upstream.aiter_raw(),
            media_type="application/octet-stream",
            headers={k: v for k, v in upstream.headers.items() if k.lower() in ("content-length", "content-disposition")},
            background=BackgroundTask(upstream.aclose),
        )

    async def read_file(self, request: Request, route: Route, user: str) -> Response:
        url, headers = self._files(route, user)
        return await read_window(self.prime.envd.http, url, headers, user, request.query_params)

