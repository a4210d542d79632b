"""``command_session.CommandSession`` (Prime's fork of envd's process service) relayed to envd.

Messages are translated field by field: ``session_uuid`` ↔ envd ``tag``, ``CommandSpec.user``
→ envd's Basic-auth user; ``input_uuid``/``signal_uuid`` make retried input and signals no-ops.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from sandlot.api.prime.context import PrimeContext
from sandlot.api.prime.gen.command_session import command_session_pb as cpb
from sandlot.api.prime.gen.command_session.command_session_connect import CommandSession
from sandlot.api.prime.gateway_auth import GATEWAY_SANDBOX_HEADER, sandbox_defaults, sandbox_route
from sandlot.protocol.gen.process import process_pb as ppb
from sandlot.protocol.gen.process.process_connect import ProcessClient
from sandlot.proxy.routes import Route

SEEN_UUIDS = 4096
"""Remembered input/signal uuids (per server) — enough to absorb client retries."""

if TYPE_CHECKING:
    # One type per oneof arm, for annotating the values we build: a bare ``Oneof("pid", x)``
    # is inferred ``Oneof[str, ...]``, which matches none of a field's ``Literal`` arms.
    _Pid = Oneof[Literal["pid"], int]
    _Tag = Oneof[Literal["tag"], str]
    _Start = Oneof[Literal["start"], cpb.CommandSessionEvent.StartEvent]
    _Data = Oneof[Literal["data"], cpb.CommandSessionEvent.DataEvent]
    _End = Oneof[Literal["end"], cpb.CommandSessionEvent.EndEvent]
    _KeepAlive = Oneof[Literal["keepalive"], cpb.CommandSessionEvent.KeepAlive]
    _InStart = Oneof[Literal["start"], ppb.StreamInputRequest.StartEvent]
    _InData = Oneof[Literal["data"], ppb.StreamInputRequest.DataEvent]
    _InKeepAlive = Oneof[Literal["keepalive"], ppb.StreamInputRequest.KeepAlive]


def _pty(pty: cpb.PTY | None) -> ppb.PTY | None:
    if pty is None:
        return None
    size = pty.size
    return ppb.PTY(size=ppb.PTY.Size(cols=size.cols, rows=size.rows) if size is not None else None)


def _selector(sel: cpb.CommandSessionSelector | None) -> ppb.ProcessSelector:
    chosen = sel.selector if sel is not None else None
    if chosen is not None and chosen.field == "pid":
        pid: _Pid = Oneof("pid", chosen.value)
        return ppb.ProcessSelector(selector=pid)
    if chosen is not None and chosen.field == "session_uuid":
        tag: _Tag = Oneof("tag", chosen.value)
        return ppb.ProcessSelector(selector=tag)
    raise ConnectError(Code.INVALID_ARGUMENT, "session selector (pid or session_uuid) is required")


def _input(data: cpb.CommandInput | None) -> ppb.ProcessInput | None:
    """``stdin``/``pty`` bytes: the same oneof on both sides, so the value carries over as is."""
    chosen = data.input if data is not None else None
    return ppb.ProcessInput(input=chosen) if chosen is not None else None


def _event(ev: ppb.ProcessEvent | None) -> cpb.CommandSessionEvent | None:
    chosen = ev.event if ev is not None else None
    if chosen is None:
        return None
    if chosen.field == "start":
        start: _Start = Oneof("start", cpb.CommandSessionEvent.StartEvent(pid=chosen.value.pid))
        return cpb.CommandSessionEvent(event=start)
    if chosen.field == "data":
        # stdout/stderr/pty bytes: the same oneof on both sides
        data: _Data = Oneof("data", cpb.CommandSessionEvent.DataEvent(output=chosen.value.output))
        return cpb.CommandSessionEvent(event=data)
    if chosen.field == "end":
        e = chosen.value
        end: _End = Oneof("end", cpb.CommandSessionEvent.EndEvent(exit_code=e.exit_code, exited=e.exited,
                                                                   status=e.status, error=e.error))
        return cpb.CommandSessionEvent(event=end)
    if chosen.field == "keepalive":
        keepalive: _KeepAlive = Oneof("keepalive", cpb.CommandSessionEvent.KeepAlive())
        return cpb.CommandSessionEvent(event=keepalive)
    return None


def _relay_error(exc: ConnectError) -> ConnectError:
    """envd's "unknown user" is UNAUTHENTICATED there, but here it would make the SDK re-auth in vain."""
    if exc.code == Code.UNAUTHENTICATED:
        return ConnectError(Code.INVALID_ARGUMENT, exc.message)
    return exc


def _timeout(ctx: RequestContext[Any, Any]) -> int | None:
    remaining = ctx.timeout_ms
    return max(1, int(remaining)) if remaining is not None else None


class CommandSessionService(CommandSession):
    def __init__(self, prime: PrimeContext) -> None:
        self.prime = prime
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _route(self, ctx: RequestContext[Any, Any]) -> tuple[str, Route]:
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

    async def start(self, request: cpb.StartRequest,
                    ctx: RequestContext[cpb.StartRequest, cpb.StartResponse]) -> AsyncIterator[cpb.StartResponse]:
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
            async for started in client.start(start, headers=headers, timeout_ms=_timeout(ctx)):
                sent = True
                yield cpb.StartResponse(event=_event(started.event))
            return
        except ConnectError as exc:
            if not (exc.code == Code.ALREADY_EXISTS and request.session_uuid and not sent):
                raise _relay_error(exc) from None
        async for response in self._attach(client, request.session_uuid or "", headers, ctx, missing_ok=False):
            yield cpb.StartResponse(event=_event(response.event))

    @staticmethod
    async def _attach(client: ProcessClient, session_uuid: str, headers: dict[str, str], ctx: RequestContext[Any, Any],
                      *, missing_ok: bool) -> AsyncIterator[ppb.ConnectResponse]:
        """envd Connect by tag; with ``missing_ok`` an unknown session yields nothing instead of failing."""
        tag: _Tag = Oneof("tag", session_uuid)
        selector = ppb.ProcessSelector(selector=tag)
        got = False
        try:
            async for response in client.connect(ppb.ConnectRequest(process=selector), headers=headers, timeout_ms=_timeout(ctx)):
                got = True
                yield response
        except ConnectError as exc:
            if not (missing_ok and not got and exc.code == Code.NOT_FOUND):
                raise _relay_error(exc) from None

    async def connect(self, request: cpb.ConnectRequest,
                      ctx: RequestContext[cpb.ConnectRequest, cpb.ConnectResponse]) -> AsyncIterator[cpb.ConnectResponse]:
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

    async def list(self, request: cpb.ListRequest,
                   ctx: RequestContext[cpb.ListRequest, cpb.ListResponse]) -> cpb.ListResponse:
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

    async def update(self, request: cpb.UpdateRequest,
                     ctx: RequestContext[cpb.UpdateRequest, cpb.UpdateResponse]) -> cpb.UpdateResponse:
        _, route = self._route(ctx)
        envd = self.prime.envd
        try:
            await envd.processes(route).update(
                ppb.UpdateRequest(process=_selector(request.session), pty=_pty(request.pty)), headers=envd.headers(route, None)
            )
        except ConnectError as exc:
            raise _relay_error(exc) from None
        return cpb.UpdateResponse()

    async def send_input(self, request: cpb.SendInputRequest,
                         ctx: RequestContext[cpb.SendInputRequest, cpb.SendInputResponse]) -> cpb.SendInputResponse:
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

    async def stream_input(self, request: AsyncIterator[cpb.StreamInputRequest],
                           ctx: RequestContext[cpb.StreamInputRequest, cpb.StreamInputResponse]) -> cpb.StreamInputResponse:
        _, route = self._route(ctx)
        envd = self.prime.envd

        async def translated() -> AsyncIterator[ppb.StreamInputRequest]:
            async for message in request:
                chosen = message.event
                if chosen is not None and chosen.field == "start":
                    start: _InStart = Oneof("start", ppb.StreamInputRequest.StartEvent(process=_selector(chosen.value.session)))
                    yield ppb.StreamInputRequest(event=start)
                elif chosen is not None and chosen.field == "data":
                    data: _InData = Oneof("data", ppb.StreamInputRequest.DataEvent(input=_input(chosen.value.input)))
                    yield ppb.StreamInputRequest(event=data)
                else:
                    keepalive: _InKeepAlive = Oneof("keepalive", ppb.StreamInputRequest.KeepAlive())
                    yield ppb.StreamInputRequest(event=keepalive)

        try:
            await envd.processes(route).stream_input(translated(), headers=envd.headers(route, None))
        except ConnectError as exc:
            raise _relay_error(exc) from None
        return cpb.StreamInputResponse()

    async def send_signal(self, request: cpb.SendSignalRequest,
                          ctx: RequestContext[cpb.SendSignalRequest, cpb.SendSignalResponse]) -> cpb.SendSignalResponse:
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
