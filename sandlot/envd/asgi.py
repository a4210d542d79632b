"""The little of an ASGI framework envd's plain-HTTP routes need: a request view and three responses.

Replaces Starlette (with anyio, typing_extensions, http.cookies, uuid…), which cost ≈ 2 MiB of
private memory in every sandbox and ≈ 10 % of envd's start-up for six routes (issue 14). The
behaviour kept is Starlette's: Content-Length on whole bodies, ``text/*`` with a charset, a
streamed body stops when the client goes away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Headers:
    """Case-insensitive view of a request's raw header list (first value wins)."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.raw = list(raw)

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self.raw:
            if k.lower() == key:
                return v.decode("latin-1")
        return default


class Request:
    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.headers = Headers(scope.get("headers", ()))
        # the last of repeated names, as Starlette's QueryParams.get
        self.query_params: dict[str, str] = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        self._consumed = False

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    async def stream(self) -> AsyncIterator[bytes]:
        if self._consumed:
            raise RuntimeError("request body already consumed")
        self._consumed = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.stream()])


class ClientDisconnect(Exception):
    """The client went away before the request body was complete."""


class Response:
    media_type: str | None = None

    def __init__(self, content: bytes | str | None = None, status_code: int = 200,
                 headers: dict[str, str] | None = None, media_type: str | None = None) -> None:
        self.status_code = status_code
        self.body = content.encode() if isinstance(content, str) else (content or b"")
        media = media_type or self.media_type
        raw: list[tuple[bytes, bytes]] = []
        keys = set()
        for k, v in (headers or {}).items():
            raw.append((k.lower().encode("latin-1"), v.encode("latin-1")))
            keys.add(k.lower())
        if self._with_length() and "content-length" not in keys:
            raw.append((b"content-length", str(len(self.body)).encode()))
        if media is not None and "content-type" not in keys:
            if media.startswith("text/") and "charset=" not in media.lower():
                media += "; charset=utf-8"
            raw.append((b"content-type", media.encode("latin-1")))
        self.raw_headers = raw

    def _with_length(self) -> bool:
        return not (self.status_code < 200 or self.status_code in (204, 304))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


class JSONResponse(Response):
    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        super().__init__(body.encode("utf-8"), status_code, headers)


class StreamingResponse(Response):
    """A body from an async iterator, chunked; a client that disconnects stops the iteration."""

    def __init__(self, content: AsyncIterator[bytes], status_code: int = 200,
                 headers: dict[str, str] | None = None, media_type: str | None = None) -> None:
        self._iterator = content
        super().__init__(None, status_code, headers, media_type)

    def _with_length(self) -> bool:
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self._iterator:
                if watcher.done():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not watcher.done():
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            closer = getattr(self._iterator, "aclose", None)
            if closer is not None:
                await closer()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status, headers, media_type="text/plain")
