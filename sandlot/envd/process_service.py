"""``process.Process`` Connect service on top of the process registry."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, cast

from connectrpc.request import RequestContext
from protobuf import Oneof

from sandlot.protocol.gen.process import process_pb as pb
from sandlot.protocol.gen.process.process_connect import Process

from .processes import End, ManagedProcess, Output, ProcessError, Registry, Spec
from .rpc_common import error, keepalive_interval, request_user, resolve_path
from .state import EnvdState

if TYPE_CHECKING:
    # One type per oneof arm, for annotating the values we build: a bare ``Oneof("end", x)``
    # is inferred ``Oneof[str, ...]``, which matches none of a field's ``Literal`` arms.
    _Start = Oneof[Literal["start"], pb.ProcessEvent.StartEvent]
    _Data = Oneof[Literal["data"], pb.ProcessEvent.DataEvent]
    _End = Oneof[Literal["end"], pb.ProcessEvent.EndEvent]
    _KeepAlive = Oneof[Literal["keepalive"], pb.ProcessEvent.KeepAlive]
    _Output = (Oneof[Literal["stdout"], bytes] | Oneof[Literal["stderr"], bytes]
               | Oneof[Literal["pty"], bytes])

SIGNALS = {pb.Signal.SIGTERM: signal.SIGTERM, pb.Signal.SIGKILL: signal.SIGKILL}


def _end_event(end: End) -> pb.ProcessEvent:
    event: _End = Oneof("end", pb.ProcessEvent.EndEvent(
        exit_code=end.exit_code, exited=end.exited, status=end.status, error=end.error,
    ))
    return pb.ProcessEvent(event=event)


class ProcessService(Process):
    def __init__(self, state: EnvdState, registry: Registry) -> None:
        self.state = state
        self.registry = registry

    # ---- helpers --------------------------------------------------------------------------
    def _select(self, selector: pb.ProcessSelector | None, include_exited: bool = False) -> ManagedProcess:
        sel = selector.selector if selector is not None else None
        try:
            if sel is not None and sel.field == "pid":
                return self.registry.find(pid=sel.value, include_exited=include_exited)
            if sel is not None and sel.field == "tag":
                return self.registry.find(tag=sel.value, include_exited=include_exited)
        except ProcessError as e:
            raise error(e.kind, str(e)) from None
        raise error("invalid_argument", "process selector is required")

    async def _follow(self, proc: ManagedProcess, ctx: RequestContext[Any, Any],
                      kill_on_deadline: bool) -> AsyncIterator[pb.ProcessEvent]:
        """start → data… (with keepalives) → end; never kills the process on disconnect."""
        sub = proc.subscribe()
        interval = keepalive_interval(ctx)
        timeout_ms = ctx.timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms is not None and not kill_on_deadline else None
        try:
            start: _Start = Oneof("start", pb.ProcessEvent.StartEvent(pid=proc.pid))
            yield pb.ProcessEvent(event=start)
            while True:
                wait = interval
                if deadline is not None:
                    wait = min(wait, max(deadline - time.monotonic(), 0))
                ev = await sub.get(wait)
                if ev is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise error("deadline_exceeded", "stream deadline exceeded")
                    keepalive: _KeepAlive = Oneof("keepalive", pb.ProcessEvent.KeepAlive())
                    yield pb.ProcessEvent(event=keepalive)
                elif isinstance(ev, Output):
                    output = cast("_Output", Oneof(ev.stream, ev.data))  # ev.stream is one of the three
                    data: _Data = Oneof("data", pb.ProcessEvent.DataEvent(output=output))
                    yield pb.ProcessEvent(event=data)
                else:
                    if ev.deadline_exceeded and kill_on_deadline:
                        raise error("deadline_exceeded", "process deadline exceeded")
                    yield _end_event(ev)
                    return
        finally:
            sub.close()

    # ---- RPCs -----------------------------------------------------------------------------
    async def list(self, request: pb.ListRequest,
                   ctx: RequestContext[pb.ListRequest, pb.ListResponse]) -> pb.ListResponse:
        infos = []
        for proc in self.registry.running.values():
            s = proc.spec
            infos.append(pb.ProcessInfo(
                config=pb.ProcessConfig(cmd=s.cmd, args=list(s.args), envs=dict(s.envs), cwd=s.cwd),
                pid=proc.pid, tag=s.tag,
            ))
        return pb.ListResponse(processes=infos)

    async def start(self, request: pb.StartRequest,
                    ctx: RequestContext[pb.StartRequest, pb.StartResponse]) -> AsyncIterator[pb.StartResponse]:
        user = request_user(self.state, ctx)
        cfg = request.process or pb.ProcessConfig()
        if not cfg.cmd:
            raise error("invalid_argument", "process cmd is required")
        cwd = resolve_path(cfg.cwd, user, self.state.default_cwd(user)) if cfg.cwd else self.state.default_cwd(user)
        if not os.path.isdir(cwd):
            raise error("invalid_argument", f"cwd '{cwd}' does not exist")
        pty_size = None
        if request.pty is not None:
            size = request.pty.size
            pty_size = (size.cols or 80, size.rows or 24) if size is not None else (80, 24)
        envs = dict(cfg.envs or {})
        spec = Spec(
            cmd=cfg.cmd, args=list(cfg.args or []), envs=envs, cwd=cwd, user=user,
            env=self.state.child_env(user, envs), tag=request.tag or None,  # proto3 may decode an absent tag as ""
            stdin=request.stdin is not False, pty_size=pty_size,
        )
        try:
            proc = self.registry.start(spec)
        except ProcessError as e:
            raise error(e.kind, str(e)) from None
        if ctx.timeout_ms is not None:
            proc.set_lifetime(ctx.timeout_ms / 1000)
        async for ev in self._follow(proc, ctx, kill_on_deadline=True):
            yield pb.StartResponse(event=ev)

    async def connect(self, request: pb.ConnectRequest,
                      ctx: RequestContext[pb.ConnectRequest, pb.ConnectResponse]) -> AsyncIterator[pb.ConnectResponse]:
        proc = self._select(request.process, include_exited=True)
        async for ev in self._follow(proc, ctx, kill_on_deadline=False):
            yield pb.ConnectResponse(event=ev)

    async def update(self, request: pb.UpdateRequest,
                     ctx: RequestContext[pb.UpdateRequest, pb.UpdateResponse]) -> pb.UpdateResponse:
        proc = self._select(request.process)
        if request.pty is not None and request.pty.size is not None:
            try:
                proc.resize(request.pty.size.cols, request.pty.size.rows)
            except ProcessError as e:
                raise error(e.kind, str(e)) from None
        return pb.UpdateResponse()

    async def _send(self, proc: ManagedProcess, data: pb.ProcessInput | None) -> None:
        chosen = data.input if data is not None else None
        try:
            if chosen is not None and chosen.field == "stdin":
                await proc.write_stdin(chosen.value)
            elif chosen is not None and chosen.field == "pty":
                await proc.write_pty(chosen.value)
        except ProcessError as e:
            raise error(e.kind, str(e)) from None

    async def send_input(self, request: pb.SendInputRequest,
                         ctx: RequestContext[pb.SendInputRequest, pb.SendInputResponse]) -> pb.SendInputResponse:
        proc = self._select(request.process)
        await self._send(proc, request.input)
        return pb.SendInputResponse()

    async def stream_input(self, request: AsyncIterator[pb.StreamInputRequest],
                           ctx: RequestContext[pb.StreamInputRequest, pb.StreamInputResponse]) -> pb.StreamInputResponse:
        proc = None
        async for msg in request:
            event = msg.event
            if event is not None and event.field == "start":
                proc = self._select(event.value.process)
            elif event is not None and event.field == "data":
                if proc is None:
                    raise error("failed_precondition", "stream input must start with a start event")
                await self._send(proc, event.value.input)
        return pb.StreamInputResponse()

    async def send_signal(self, request: pb.SendSignalRequest,
                          ctx: RequestContext[pb.SendSignalRequest, pb.SendSignalResponse]) -> pb.SendSignalResponse:
        proc = self._select(request.process)
        sig = SIGNALS.get(request.signal)
        if sig is None:
            raise error("invalid_argument", f"invalid signal: {request.signal}")
        proc.signal(sig)
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest,
                          ctx: RequestContext[pb.CloseStdinRequest, pb.CloseStdinResponse]) -> pb.CloseStdinResponse:
        proc = self._select(request.process)
        try:
            proc.close_stdin()
        except ProcessError as e:
            raise error(e.kind, str(e)) from None
        return pb.CloseStdinResponse()
