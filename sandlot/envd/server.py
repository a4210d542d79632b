"""ASGI app: Connect services + plain HTTP routes on one port, behind the access-token gate."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from sandlot.protocol.auth import ACCESS_TOKEN_HEADER
from sandlot.protocol.gen.filesystem.filesystem_connect import FilesystemASGIApplication
from sandlot.protocol.gen.process.process_connect import ProcessASGIApplication

from . import auth
from .asgi import JSONResponse, Receive, Request, Response, Scope, Send, plain
from .files_http import FilesHandler, json_error
from .filesystem import FilesystemService
from .metrics import Metrics
from .process_service import ProcessService
from .processes import Registry
from .state import EnvdState

CONNECT_PREFIXES = ("/process.Process/", "/filesystem.Filesystem/")
_TOKEN_KEY = ACCESS_TOKEN_HEADER.lower().encode()
Handler = Callable[[Request], Awaitable[Response]]


class EnvdApp:
    """Dispatches Connect paths to the connectrpc apps and everything else to its own routes."""

    def __init__(self, state: EnvdState) -> None:
        self.state = state
        self.registry = Registry()
        # the SDK disables compression both ways
        self.process_app = ProcessASGIApplication(ProcessService(state, self.registry), compressions=())
        self.fs_app = FilesystemASGIApplication(FilesystemService(state), compressions=())
        self.files = files = FilesHandler(state)
        self._metrics = Metrics()
        # path -> method -> handler; a GET route answers HEAD too (the server drops the body)
        self.routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self.health},
            "/init": {"POST": self.init},
            "/envs": {"GET": self.envs},
            "/metrics": {"GET": self.metrics},
            "/files": {"GET": files.download, "POST": files.upload},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1000})
        if scope["type"] != "http":
            return None
        path: str = scope["path"]
        if path.startswith(CONNECT_PREFIXES):
            if not self._token_ok(scope):
                body = json.dumps({"code": "unauthenticated", "message": auth.UNAUTHORIZED_MESSAGE}).encode()
                return await Response(body, 401, media_type="application/json")(scope, receive, send)
            app = self.process_app if path.startswith("/process.") else self.fs_app
            return await app(scope, receive, send)
        methods = self.routes.get(path)
        if methods is None:
            return await plain(404, "Not Found")(scope, receive, send)
        method = scope["method"]
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            return await plain(405, "Method Not Allowed", {"Allow": allow})(scope, receive, send)
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    def _token_ok(self, scope: Scope) -> bool:
        given = None
        for k, v in scope.get("headers", ()):
            if k == _TOKEN_KEY:
                given = v.decode("latin-1")
        return auth.token_ok(self.state.access_token, given)

    def _guard(self, request: Request) -> Response | None:
        if auth.token_ok(self.state.access_token, request.headers.get(ACCESS_TOKEN_HEADER)):
            return None
        return json_error(401, auth.UNAUTHORIZED_MESSAGE)

    async def health(self, request: Request) -> Response:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})

    async def init(self, request: Request) -> Response:
        # Once a token is set only its holder (the orchestrator) may re-initialise:
        # otherwise any process that reaches envd could swap the token and lock out the owner.
        denied = self._guard(request)
        if denied is not None:
            return denied
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return json_error(400, "invalid JSON body")
        if not isinstance(body, dict):
            return json_error(400, "invalid JSON body")
        self.state.apply_init(body)
        return Response(status_code=204, headers={"Cache-Control": "no-store"})

    async def envs(self, request: Request) -> Response:
        return self._guard(request) or JSONResponse(self.state.env_vars)

    async def metrics(self, request: Request) -> Response:
        return self._guard(request) or JSONResponse(await self._metrics.snapshot())
