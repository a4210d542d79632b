"""The port-49999 HTTP API the ``e2b-code-interpreter`` SDK calls (E2B spec §5.2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandlot.code_interpreter import messages
from sandlot.code_interpreter.execution import Execution
from sandlot.code_interpreter.kernels import (
    ContextNotFound,
    Contexts,
    UnsupportedLanguage,
)


@dataclass(frozen=True)
class Config:
    envd_url: str = "http://localhost:49983"
    default_cwd: str = "/home/user"
    runtime_dir: Path = Path("/tmp/.sandlot-code-interpreter")
    default_languages: tuple[str, ...] = ("python",)
    """Contexts started with the server, so the first cell doesn't wait for a kernel."""
    keepalive_s: float = 5.0


class BadRequest(Exception):
    pass


class NdjsonStream(StreamingResponse):
    """Streams the execution's lines and notices a client that goes away even while the
    cell is silent (HTTP/1.1: the SDK cancels an execution by closing the connection)."""

    def __init__(self, execution: Execution, keepalive_s: float) -> None:
        super().__init__(self._body(execution, keepalive_s))
        self.execution = execution

    @staticmethod
    async def _body(execution: Execution, keepalive_s: float) -> AsyncIterator[bytes]:
        async for line in execution.lines(keepalive_s):
            yield messages.encode(line)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        gone = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({stream, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, gone):
                task.cancel()
            if not stream.done() or stream.cancelled() or stream.exception() is not None:
                self.execution.abandon()
            await asyncio.gather(stream, gone, return_exceptions=True)


def _text(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def create_app(config: Config) -> Starlette:
    contexts = Contexts(config.runtime_dir, config.default_cwd)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        for language in config.default_languages:
            await contexts.default(language)
        try:
            yield
        finally:
            await contexts.close()

    async def health(_request: Request) -> Response:
        return JSONResponse("OK")

    async def execute(request: Request) -> Response:
        body = await _json_body(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest("'code' must be a string")
        context_id = _optional_str(body, "context_id")
        language = _optional_str(body, "language")
        if context_id and language:
            raise BadRequest("Only one of context_id or language can be provided")
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict):
            raise BadRequest("'env_vars' must be an object of strings")
        kernel = contexts.get(context_id) if context_id else await contexts.default(language)
        execution = Execution(kernel, code, {str(k): str(v) for k, v in env_vars.items()},
                              envd_url=config.envd_url, access_token=request.headers.get("x-access-token"))
        return NdjsonStream(execution, config.keepalive_s)

    async def create_context(request: Request) -> Response:
        body = await _json_body(request)
        cwd = _optional_str(body, "cwd")
        if cwd is not None and not Path(cwd).is_dir():
            raise BadRequest(f"cwd '{cwd}' is not a directory")
        kernel = await contexts.create(_optional_str(body, "language"), cwd)
        return JSONResponse(kernel.describe())

    async def list_contexts(_request: Request) -> Response:
        return JSONResponse([k.describe() for k in contexts.kernels.values()])

    async def restart_context(request: Request) -> Response:
        await contexts.restart(request.path_params["context_id"])
        return JSONResponse(None)

    async def remove_context(request: Request) -> Response:
        await contexts.remove(request.path_params["context_id"])
        return JSONResponse(None)

    async def bad_request(_request: Request, exc: Exception) -> Response:
        return _text(400, str(exc))

    async def not_found(_request: Request, exc: Exception) -> Response:
        return _text(404, str(exc))

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/execute", execute, methods=["POST"]),
            Route("/contexts", create_context, methods=["POST"]),
            Route("/contexts", list_contexts, methods=["GET"]),
            Route("/contexts/{context_id}/restart", restart_context, methods=["POST"]),
            Route("/contexts/{context_id}", remove_context, methods=["DELETE"]),
        ],
        lifespan=lifespan,
        exception_handlers={BadRequest: bad_request, UnsupportedLanguage: bad_request, ContextNotFound: not_found},
    )
