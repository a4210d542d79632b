"""``command_session.CommandSession`` (Prime's fork of envd's process service) relayed to envd.

Messages are translated field by field: ``session_uuid`` ↔ envd ``tag``, ``CommandSpec.user``
→ envd's Basic-auth user; ``input_uuid``/``signal_uuid`` make retried input and signals no-ops.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from sandlot.api.prime.context import PrimeContext
from sandlot.api.prime.gen.command_session import command_session_pb as cpb
from sandlot.api.prime.gen.command_session.command_session_connect import CommandSession
from sandlot.api.prime.gateway_auth import GATEWAY_SANDBOX_HEADER, sandbox_defaults, sandbox_route
from sandlot.protocol.gen.process import process_pb as ppb
from sandlot.orchestrator.sandboxes import Route

SEEN_UUIDS = 4096
"""Remembered input/signal uuids (per server) — enough to absorb client retries."""


def _pty(pty: cpb.PTY | None) -> ppb.PTY | None:
    if pty is None:
        return None
    size = pty.size
    return ppb.PTY(size=ppb.PTY.Size(cols=size.cols, rows=size.rows) if size is not None else None)


def _selector(sel: cpb.CommandSessionSelector | None) -> ppb.ProcessSelector:
    match sel.selector if sel is not None else None:
        case Oneof(field="pid", value=pid):
            return ppb.ProcessSelector(selector=Oneof("pid", pid))
        case Oneof(field="session_uuid", value=uuid):
            return ppb.ProcessSelector(selector=Oneof("tag", uuid))
    raise ConnectError(Code.INVALID_ARGUMENT, "session selector (pid or session_uuid) is required")


def _input(data: cpb.CommandInput | None) -> ppb.ProcessInput | None:
    match data.input if data is not None else None:
        case Oneof(field=name, value=chunk):
            return ppb.ProcessInput(input=Oneof(name, chunk))
    return None


def _event(ev: ppb.ProcessEvent | None) -> cpb.CommandSessionEvent | None:
    match ev.event if ev is not None else None:
        case Oneof(field="start", value=start):
            return cpb.CommandSessionEvent(event=Oneof("start", cpb.CommandSessionEvent.StartEvent(pid=start.pid)))
        case Oneof(field="data", value=data):
            out = data.output
            inner = cpb.CommandSessionEvent.DataEvent(output=Oneof(out.field, out.value) if out is not None else None)
            return cpb.CommandSessionEvent(event=Oneof("data", inner))
        case Oneof(field="end", value=end):
            inner = cpb.CommandSessionEvent.EndEvent(exit_code=end.exit_code, exited=end.exited, status=end.status, error=end.error)
            return cpb.CommandSessionEvent(event=Oneof("end", inner))
        case Oneof(field="keepalive"):
            return cpb.CommandSessionEvent(event=Oneof("keepalive", cpb.CommandSessionEvent.KeepAlive()))
    return None


def _relay_error(exc: ConnectError) -> ConnectError:
    """envd's "unknown user" is UNAUTHENTICATED there, but here it would make the SDK re-auth in vain."""
    if exc.code == Code.UNAUTHENTICATED:
        return ConnectError(Code.INVALID_ARGUMENT, exc.message)
    return exc


def _timeout(ctx: RequestContext) -> int | None:
    remaining = ctx.timeout_ms
    return max(1, int(remaining)) if remaining is not None else None


class CommandSessionService(CommandSession):
    def __init__(self, prime: PrimeContext) -> None:
        self.prime = prime
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _route(self, ctx: RequestContext) -> tuple[str, Route]:
        """The sandbox the gateway already authenticated for this request, or a Connect error."""
        sandbox_id = ctx.request_headers.get(GATEWAY_SANDBOX_HEADER)
        if not sandbox_id:
            raise ConnectError(Code.UNAUTHENTICATED, "missing or invalid sandbox token")
        route, problem = sandbox_route(self.prime, sandbox_id)
        if route is None:
            code = Code.UNAVAILABLE if problem == "sandbox_not_ready" else Code.NOT_FOUND
            raise ConnectError(code, f"{problem}: sandbox {sandbox_id}")
        return sandbox_id, route

    def _first_time(self, sandbox_id: str, uuid: str | None) -> bool:
        if not uuid:
            return True
        key = (sandbox_id, uuid)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > SEEN_UUIDS:
            self._seen.popitem(last=False)
        return True

    async def start(self, request: cpb.StartRequest, ctx: RequestContext) -> AsyncIterator[cpb.StartResponse]:
        sandbox_id, route = self._route(ctx)
        spec = request.command or cpb.CommandSpec()
        envd = self.prime.envd
        default_user, default_cwd = sandbox_defaults(self.prime, sandbox_id)
        headers = envd.headers(route, spec.user or default_user)
        cwd = spec.cwd or default_cwd
        start = ppb.StartRequest(
            process=ppb.ProcessConfig(cmd=spec.cmd, args=list(spec.args or []), envs=dict(spec.envs or {}), cwd=cwd),
            pty=_pty(request.pty),
            tag=request.session_uuid or None,
            stdin=request.stdin,
        )
        client = envd.processes(route)
        sent = False
        if request.session_uuid:
            # Start is create-or-attach by session_uuid: a retried Start joins (or replays) that session.
            async for response in self._attach(client, request.session_uuid, headers, ctx, missing_ok=True):
                yield cpb.StartResponse(event=_event(response.event))
                sent = True
            if sent:
                return
        try:
            async for response in client.start(start, headers=headers, timeout_ms=_timeout(ctx)):
                sent = True
                yield cpb.StartResponse(event=_event(response.event))
            return
        except ConnectError as exc:
            if not (exc.code == Code.ALREADY_EXISTS and request.session_uuid and not sent):
                raise _relay_error(exc) from None
        async for response in self._attach(client, request.session_uuid or "", headers, ctx, missing_ok=False):
            yield cpb.StartResponse(event=_event(response.event))

    @staticmethod
    async def _attach(client, session_uuid: str, headers: dict[str, str], ctx: RequestContext, *, missing_ok: bool):
        """envd Connect by tag; with ``missing_ok`` an unknown session yields nothing instead of failing."""
        selector = ppb.ProcessSelector(selector=Oneof("tag", session_uuid))
        got = False
        try:
            async for response in client.connect(ppb.ConnectRequest(process=selector), headers=headers, timeout_ms=_timeout(ctx)):
                got = True
                yield response
        except ConnectError as exc:
            if not (missing_ok and not got and exc.code == Code.NOT_FOUND):
                raise _relay_error(exc) from None

    async def connect(self, request: cpb.ConnectRequest, ctx: RequestContext) -> AsyncIterator[cpb.ConnectResponse]:
        _, route = self._route(ctx)
        envd = self.prime.envd
        try:
            stream = envd.processes(route).connect(
                ppb.ConnectRequest(process=_selector(request.session)), headers=envd.headers(route, None), timeout_ms=_timeout(ctx)
            )
            async for response in stream:
                yield cpb.ConnectResponse(event=_event(response.event))
        except ConnectError as exc:
            raise _relay_error(exc) from None

    async def list(self, request: cpb.ListRequest, ctx: RequestContext) -> cpb.ListResponse:
        _, route = self._route(ctx)
        envd = self.prime.envd
        try:
            listed = await envd.processes(route).list(ppb.ListRequest(), headers=envd.headers(route, None))
        except ConnectError as exc:
            raise _relay_error(exc) from None
        sessions = []
        for proc in listed.processes or []:
            config = proc.config or ppb.ProcessConfig()
            command = cpb.CommandSpec(cmd=config.cmd, args=list(config.args or []), envs=dict(config.envs or {}), cwd=config.cwd)
            sessions.append(cpb.CommandSessionInfo(command=command, pid=proc.pid, session_uuid=proc.tag))
        return cpb.ListResponse(sessions=sessions)

    async def update(self, request: cpb.UpdateRequest, ctx: RequestContext) -> cpb.UpdateResponse:
        _, route = self._route(ctx)
        envd = self.prime.envd
        try:
            await envd.processes(route).update(
                ppb.UpdateRequest(process=_selector(request.session), pty=_pty(request.pty)), headers=envd.headers(route, None)
            )
        except ConnectError as exc:
            raise _relay_error(exc) from None
        return cpb.UpdateResponse()

    async def send_input(self, request: cpb.SendInputRequest, ctx: RequestContext) -> cpb.SendInputResponse:
        sandbox_id, route = self._route(ctx)
        if self._first_time(sandbox_id, request.input_uuid):
            envd = self.prime.envd
            try:
                await envd.processes(route).send_input(
                    ppb.SendInputRequest(process=_selector(request.session), input=_input(request.input)),
                    headers=envd.headers(route, None),
                )
            except ConnectError as exc:
                self._seen.pop((sandbox_id, request.input_uuid or ""), None)
                raise _relay_error(exc) from None
        return cpb.SendInputResponse()

    async def stream_input(self, request: AsyncIterator[cpb.StreamInputRequest], ctx: RequestContext) -> cpb.StreamInputResponse:
        _, route = self._route(ctx)
        envd = self.prime.envd

        async def translated() -> AsyncIterator[ppb.StreamInputRequest]:
            async for message in request:
                match message.event:
                    case Oneof(field="start", value=start):
                        event = Oneof("start", ppb.StreamInputRequest.StartEvent(process=_selector(start.session)))
                    case Oneof(field="data", value=data):
                        event = Oneof("data", ppb.StreamInputRequest.DataEvent(input=_input(data.input)))
                    case _:
                        event = Oneof("keepalive", ppb.StreamInputRequest.KeepAlive())
                yield ppb.StreamInputRequest(event=event)

        try:
            await envd.processes(route).stream_input(translated(), headers=envd.headers(route, None))
        except ConnectError as exc:
            raise _relay_error(exc) from None
        return cpb.StreamInputResponse()

    async def send_signal(self, request: cpb.SendSignalRequest, ctx: RequestContext) -> cpb.SendSignalResponse:
        sandbox_id, route = self._route(ctx)
        if self._first_time(sandbox_id, request.signal_uuid):
            envd = self.prime.envd
            try:
                await envd.processes(route).send_signal(
                    ppb.SendSignalRequest(process=_selector(request.session), signal=ppb.Signal(int(request.signal))),
                    headers=envd.headers(route, None),
                )
            except ConnectError as exc:
                self._seen.pop((sandbox_id, request.signal_uuid or ""), None)
                raise _relay_error(exc) from None
        return cpb.SendSignalResponse()
