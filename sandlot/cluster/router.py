"""``sandlot api``: a stateless router in front of the node agents.

Every request goes, unchanged but for the node token, to exactly one node, which runs the whole
E2B/Prime API and front door for the sandboxes it holds (docs/scale-out.md):

- sandbox traffic (``{port}-{id}.{domain}``, ``E2b-Sandbox-Id``, signed ``/files`` URLs) and the
  API paths of one sandbox (``/sandboxes/{id}/…``, Prime's ``/api/v1/sandbox/{id}…``) → the node
  in the sandbox's row;
- a create → the best node by :mod:`sandlot.cluster.placement` (a create from a snapshot → the
  snapshot's node), the next candidate when a node is unreachable or refuses with 503;
- a sandbox whose node is silent → a ready node: a paused one is resumed there (the node adopts
  its images from the blob store), a running one is answered as gone by that node;
- everything else (templates, builds, teams, keys, events, lists) → any ready node, in turn:
  they all read and write the one PostgreSQL store.

The router holds no state of its own beyond short caches (:mod:`sandlot.cluster.directory`); any
number of instances can run behind any load balancer. Bodies and responses stream; WebSockets
are relayed message by message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from sqlalchemy import select

from sandlot.cluster import placement
from sandlot.cluster.directory import Directory, NodeView
from sandlot.cluster.sweeper import Sweeper
from sandlot.proxy import headers as hdrs
from sandlot.proxy.routing import BadTarget, target_of
from sandlot.proxy.upstream import BadRequestTarget, check_target
from sandlot.proxy.websocket import deny_websocket, proxy_websocket
from sandlot.settings import Settings
from sandlot.store import nodes as node_store
from sandlot.store.database import Database
from sandlot.store.models import Snapshot

log = structlog.get_logger("sandlot.cluster")

_SANDBOX_PATH = re.compile(r"^/(?:v\d+/)?sandboxes/(?P<id>[^/]+)(?P<rest>/.*)?$")
_PRIME_SANDBOX_PATH = re.compile(r"^/api/v1/sandbox/(?P<id>[^/:]+)(?P<rest>/.*)?$")
_PRIME_GATEWAY_PATH = re.compile(r"^/gateway/[^/]+/(?P<id>[^/]+)(?P<rest>/.*)?$")
_NOT_SANDBOX_IDS = frozenset({"metrics", "checkpoints", "volumes", "background-jobs"})
_MOVES = ("/pause", "/resume", "/connect", "/snapshots")
"""Sandbox paths after which the router's cached holder may be wrong."""
_CREATES = (("POST", "/sandboxes"), ("POST", "/v2/sandboxes"), ("POST", "/api/v1/sandbox"))
_UNSUPPORTED = (re.compile(r"^/volumes(/|$)"), re.compile(r"^/volumecontent(/|$)"),
                re.compile(r"^/api/v1/sandbox/volumes(/|$)"), re.compile(r"^/api/v1/sandbox/[^/]+/volumes/"))
MAX_CREATE_BODY = 1 << 20


def _json(status: int, body: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    payload = json.dumps(body).encode()
    return status, [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())], payload


async def _answer(scope: dict[str, Any], send: Any, status: int, body: dict[str, Any]) -> None:
    if scope["type"] == "websocket":
        await deny_websocket(scope, send, status, body)
        return
    status, headers, payload = _json(status, body)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def sandbox_of_path(path: str) -> str | None:
    """The sandbox an API path is about (``/sandboxes/{id}…``, Prime's ``/api/v1/sandbox/{id}…`` and
    its gateway's ``/gateway/{namespace}/{id}/…``)."""
    for pattern in (_SANDBOX_PATH, _PRIME_SANDBOX_PATH, _PRIME_GATEWAY_PATH):
        found = pattern.match(path)
        if found and found["id"] not in _NOT_SANDBOX_IDS:
            return found["id"]
    return None


class Router:
    """The ASGI app of ``sandlot api``."""

    def __init__(self, settings: Settings, db: Database) -> None:
        if not settings.node_token:
            raise ValueError("sandlot api needs SANDLOT_NODE_TOKEN (the node agents require it)")
        self.settings = settings
        self.db = db
        self.directory = Directory(settings, db)
        self.sweeper = Sweeper(settings, db)
        self.token = settings.node_token
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=60),
            trust_env=False,   # straight to the node's address, whatever HTTP_PROXY says
        )
        self._turn = itertools.count()

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            return
        try:
            check_target(scope.get("method", "GET"), scope.get("raw_path") or scope["path"].encode(),
                         scope.get("query_string", b""))
            target = target_of(scope["headers"], self.settings.domain)
        except (BadTarget, BadRequestTarget) as exc:
            await _answer(scope, send, 400, {"code": 400, "message": str(exc)})
            return
        path: str = scope["path"]
        method: str = scope.get("method", "GET")
        if target is None and path == "/health" and scope["type"] == "http":
            await self._health(send)
            return
        body: bytes | None = None
        held: str | None = None   # the sandbox whose holder was looked up (forgotten if unreachable)
        if target is not None:
            held = target.sandbox_id
            node = await self._holder(target.sandbox_id)
        elif path == "/files" and b"signature=" in scope.get("query_string", b""):
            held = await self.directory.signer(method, scope.get("query_string", b""))
            node = await self._holder(held) if held else await self._any()
        elif any(pattern.match(path) for pattern in _UNSUPPORTED):
            await _answer(scope, send, 501, {"code": 501, "message": "Volumes are not available when Sandlot runs "
                                             "as a cluster yet (docs/scale-out.md): use a single-box server"})
            return
        elif (method, path.rstrip("/")) in _CREATES and scope["type"] == "http":
            body = await self._read_body(receive)
            if body is None:
                await _answer(scope, send, 413, {"code": 413, "message": "The create request body is too large"})
                return
            await self._create(scope, send, body)
            return
        elif method == "DELETE" and path.rstrip("/") == "/api/v1/sandbox" and scope["type"] == "http":
            body = await self._read_body(receive)
            await self._bulk_delete(scope, send, body or b"")
            return
        elif (sandbox_id := sandbox_of_path(path)) is not None:
            held = sandbox_id
            node = await self._holder(sandbox_id)
            if method != "GET" and (method == "DELETE" or path.endswith(_MOVES)):
                self.directory.forget(sandbox_id)
        elif method == "DELETE" and path.startswith("/templates/"):
            node = await self._snapshot_node(path.removeprefix("/templates/")) or await self._any()
        elif path.startswith("/dashboard"):
            node = await self._sticky()   # the dashboard's sessions live in one node's memory
        else:
            node = await self._any()
        if node is None:
            await _answer(scope, send, 503, {"code": 503, "message": "No node agent is available: none has "
                                             "heartbeaten recently (GET /nodes with the admin token)"})
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, node)
        elif not await self._forward(scope, receive, send, node, body) and held is not None:
            self.directory.forget(held)   # its node is unreachable: look it up afresh next time

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.sweeper.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.sweeper.close()
                await self.client.aclose()
                await asyncio.to_thread(self.db.dispose)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, send: Any) -> None:
        nodes = await self.directory.nodes()
        ready = [n.id for n in nodes.values() if n.status == node_store.READY]
        status, body = (200, {"status": "ok", "role": "api", "readyNodes": ready}) if ready else (
            503, {"code": 503, "message": "no ready node", "role": "api"})
        status, headers, payload = _json(status, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # --- choosing a node ------------------------------------------------------------------------

    async def _ready(self) -> list[NodeView]:
        return [n for n in (await self.directory.nodes()).values() if n.status == node_store.READY]

    async def _any(self) -> NodeView | None:
        """A ready node, in turn (a draining one if no node is ready: it still answers reads)."""
        nodes = await self._ready() or [n for n in (await self.directory.nodes()).values()
                                        if n.status == node_store.DRAINING]
        return nodes[next(self._turn) % len(nodes)] if nodes else None

    async def _sticky(self) -> NodeView | None:
        nodes = sorted(await self._ready(), key=lambda n: n.id)
        return nodes[0] if nodes else None

    async def _holder(self, sandbox_id: str) -> NodeView | None:
        """The node holding ``sandbox_id``; when it is silent (or there is no such sandbox), a ready
        node, which resumes a paused sandbox by adopting it or answers as E2B does for a lost one."""
        holding = await self.directory.holding(sandbox_id)
        if holding is not None and holding.node_id is not None:
            node = (await self.directory.nodes()).get(holding.node_id)
            if node is not None and node.status != node_store.UNAVAILABLE:
                return node
            self.directory.forget(sandbox_id)
            if holding.state == "paused":
                ranked = await self._ranked(None)
                return ranked[0] if ranked else None
        return await self._any()

    async def _ranked(self, template: str | None) -> list[NodeView]:
        nodes = await self._ready()

        def load() -> dict[str, placement.Load]:
            with self.db.session() as session:
                return placement.loads(session, template)

        return placement.rank(nodes, await asyncio.to_thread(load))

    async def _snapshot_node(self, snapshot_id: str) -> NodeView | None:
        """The node whose disk holds a snapshot (creates from it and its deletion go there)."""
        def read() -> str | None:
            with self.db.session() as session:
                return session.execute(select(Snapshot.node_id).where(Snapshot.id == snapshot_id)).scalar()

        node_id = await asyncio.to_thread(read) if snapshot_id and "/" not in snapshot_id else None
        node = (await self.directory.nodes()).get(node_id) if node_id else None
        return node if node is not None and node.status != node_store.UNAVAILABLE else None

    # --- creates --------------------------------------------------------------------------------

    @staticmethod
    async def _read_body(receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_CREATE_BODY:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _create(self, scope: dict[str, Any], send: Any, body: bytes) -> None:
        try:
            requested = json.loads(body or b"{}")
        except ValueError:
            requested = {}
        template = None
        if isinstance(requested, dict):
            value = requested.get("templateID") or requested.get("docker_image") or requested.get("dockerImage")
            template = value if isinstance(value, str) else None
        if requested and isinstance(requested, dict) and requested.get("volumeMounts"):
            await _answer(scope, send, 501, {"code": 501, "message": "Volumes are not available when Sandlot runs "
                                             "as a cluster yet (docs/scale-out.md): use a single-box server"})
            return
        snapshot_node = await self._snapshot_node(template) if template else None
        candidates = [snapshot_node] if snapshot_node is not None else await self._ranked(template)
        if not candidates:
            await _answer(scope, send, 503, {"code": 503, "message": "No node can take new sandboxes: every node "
                                             "is draining, full or silent"})
            return
        last: httpx.Response | None = None
        for node in candidates:
            try:
                response = await self._send(scope, node, body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:   # never reached the node: safe to retry
                log.warning("node unreachable for a create; trying the next", node=node.id, error=repr(exc))
                continue
            except httpx.TransportError as exc:   # the node may have started it: no second create elsewhere
                log.warning("create failed at the node", node=node.id, error=repr(exc))
                await _answer(scope, send, 502, {"code": 502, "message": f"Node {node.id} failed during the create"})
                return
            if response.status_code == 503 and node is not candidates[-1]:
                await response.aread()
                await response.aclose()
                last = response
                continue
            await self._respond(response, send)
            return
        if last is not None:
            await send({"type": "http.response.start", "status": last.status_code,
                        "headers": _response_headers(last)})
            await send({"type": "http.response.body", "body": last.content})
            return
        await _answer(scope, send, 502, {"code": 502, "message": "No node agent could be reached for the create"})

    async def _bulk_delete(self, scope: dict[str, Any], send: Any, body: bytes) -> None:
        """Prime's bulk delete names sandboxes (or labels) on any nodes: every ready node deletes
        the ones it holds; the answers are merged (a sandbox fails only if no node deleted it)."""
        nodes = await self._ready()
        if not nodes:
            await _answer(scope, send, 503, {"code": 503, "message": "No node agent is available"})
            return
        answers: list[tuple[int, bytes]] = []
        for node in nodes:
            try:
                response = await self._send(scope, node, body)
                answers.append((response.status_code, await response.aread()))
                await response.aclose()
            except httpx.TransportError as exc:
                log.warning("node unreachable for a bulk delete", node=node.id, error=repr(exc))
        merged = merge_bulk(answers)
        if merged is None:   # a refusal (422, 401): every node gives the same one
            status, payload = answers[0] if answers else (502, b'{"detail": "No node agent could be reached"}')
        else:
            status, payload = 200, json.dumps(merged).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    # --- forwarding -----------------------------------------------------------------------------

    def _headers(self, scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        drop = hdrs.HOP_BY_HOP | {b"content-length"}
        kept = [(k, v) for k, v in scope["headers"] if k.lower() not in drop]
        return [*kept, (hdrs.NODE_TOKEN, self.token.encode())]

    async def _send(self, scope: dict[str, Any], node: NodeView, content: bytes | AsyncIterator[bytes] | None
                    ) -> httpx.Response:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        url = httpx.URL(node.url + raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else ""))
        request = self.client.build_request(scope["method"], url, headers=self._headers(scope), content=content)
        return await self.client.send(request, stream=True)

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any, node: NodeView,
                       body: bytes | None) -> bool:
        """Relay one request to ``node``; ``False`` when the node could not be reached."""
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        done = asyncio.Event()

        async def request_body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    done.set()
                    raise asyncio.CancelledError("client went away")
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    done.set()
                    return

        content: bytes | AsyncIterator[bytes] | None = body if body is not None else (
            request_body() if has_body else None)
        if not isinstance(content, AsyncIterator):
            done.set()
        try:
            response = await self._send(scope, node, content)
        except httpx.TransportError as exc:
            log.warning("node unreachable", node=node.id, error=repr(exc))
            await _answer(scope, send, 502, {"code": 502, "message": f"Node {node.id} could not be reached"})
            return False

        async def watch_disconnect() -> None:
            await done.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(watch_disconnect())
        pump = asyncio.ensure_future(self._respond(response, send))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watcher):
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            await response.aclose()
        return True

    @staticmethod
    async def _respond(response: httpx.Response, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": _response_headers(response)})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any, node: NodeView) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        url = f"ws://{node.address}{raw_path.decode('latin-1')}" + (f"?{query.decode('latin-1')}" if query else "")
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"), None)
        unreachable = {"code": 502, "message": f"Node {node.id} could not be reached"}
        await proxy_websocket(scope, receive, send, url, host, unreachable,
                              extra_headers=((hdrs.NODE_TOKEN.decode(), self.token),))


def _response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The node's headers minus this hop's (a chunked body is re-framed by our server)."""
    raw = list(response.headers.raw)
    chunked = any(k.lower() == b"transfer-encoding" for k, _ in raw)
    drop = hdrs.HOP_BY_HOP | ({b"content-length"} if chunked else set())
    return [(k, v) for k, v in raw if k.lower() not in drop]


def merge_bulk(answers: list[tuple[int, bytes]]) -> dict[str, Any] | None:
    """One bulk-delete answer from every node's; ``None`` unless they all succeeded."""
    if not answers or any(status != 200 for status, _ in answers):
        return None
    succeeded: list[str] = []
    failed: dict[str, str] = {}
    for _, payload in answers:
        data = json.loads(payload)
        succeeded += [sid for sid in data.get("succeeded", []) if sid not in succeeded]
        for entry in data.get("failed", []):
            for sid, message in entry.items():
                failed.setdefault(sid, message)
    failures = [{sid: message} for sid, message in failed.items() if sid not in succeeded]
    return {"succeeded": succeeded, "failed": failures,
            "message": f"Deleted {len(succeeded)} sandbox(es), {len(failures)} failed"}
