"""``process.Process`` Connect service on top of the process registry."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator

from connectrpc.request import RequestContext
from protobuf import Oneof

from sandlot.protocol.gen.process import process_pb as pb
from sandlot.protocol.gen.process.process_connect import Process

from .processes import End, Output, ProcessError, Registry, Spec
from .rpc_common import error, keepalive_interval, request_user, resolve_path
from .state import EnvdState

SIGNALS = {pb.Signal.SIGTERM: signal.SIGTERM, pb.Signal.SIGKILL: signal.SIGKILL}



def _event(**kw: object) -> pb.ProcessEvent:
    ((field, value),) = kw.items()
    return pb.ProcessEvent(event=Oneof(field, value))


def _end_event(end: End) -> pb.ProcessEvent:
    return _event(end=pb.ProcessEvent.EndEvent(
        exit_code=end.exit_code, exited=end.exited, status=end.status, error=end.error,
    ))


class ProcessService(Process):
    def __init__(self, state: EnvdState, registry: Registry) -> None:
        self.state = state
        self.registry = registry

    # ---- helpers --------------------------------------------------------------------------
    def _select(self, selector: pb.ProcessSelector | None, include_exited: bool = False):
        sel = selector.selector if selector is not None else None
        try:
            match sel:
                case Oneof(field="pid", value=pid):
                    return self.registry.find(pid=pid, include_exited=include_exited)
                case Oneof(field="tag", value=tag):
                    return self.registry.find(tag=tag, include_exited=include_exited)
        except ProcessError as e:
            raise error(e.kind, str(e)) from None
        raise error("invalid_argument", "process selector is required")

    async def _follow(self, proc, ctx: RequestContext, kill_on_deadline: bool) -> AsyncIterator[pb.ProcessEvent]:
        """start → data… (with keepalives) → end; never kills the process on disconnect."""
        sub = proc.subscribe()
        interval = keepalive_interval(ctx)
        timeout_ms = ctx.timeout_ms
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms is not None and not kill_on_deadline else None
        try:
            yield _event(start=pb.ProcessEvent.StartEvent(pid=proc.pid))
            while True:
                wait = interval
                if deadline is not None:
                    wait = min(wait, max(deadline - time.monotonic(), 0))
                ev = await sub.get(wait)
                if ev is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise error("deadline_exceeded", "stream deadline exceeded")
                    yield _event(keepalive=pb.ProcessEvent.KeepAlive())
                elif isinstance(ev, Output):
                    yield _event(data=pb.ProcessEvent.DataEvent(output=Oneof(ev.stream, ev.data)))
                else:
                    if ev.deadline_exceeded and kill_on_deadline:
                        raise error("deadline_exceeded", "process deadline exceeded")
                    yield _end_event(ev)
                    return
        finally:
            sub.close()

    # ---- RPCs -----------------------------------------------------------------------------
    async def list(self, request: pb.ListRequest, ctx: RequestContext) -> pb.ListResponse:
        infos = []
        for proc in self.registry.running.values():
            s = proc.spec
            infos.append(pb.ProcessInfo(
                config=pb.ProcessConfig(cmd=s.cmd, args=list(s.args), envs=dict(s.envs), cwd=s.cwd),
                pid=proc.pid, tag=s.tag,
            ))
        return pb.ListResponse(processes=infos)

    async def start(self, request: pb.StartRequest, ctx: RequestContext) -> AsyncIterator[pb.StartResponse]:
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

    async def connect(self, request: pb.ConnectRequest, ctx: RequestContext) -> AsyncIterator[pb.ConnectResponse]:
        proc = self._select(request.process, include_exited=True)
        async for ev in self._follow(proc, ctx, kill_on_deadline=False):
            yield pb.ConnectResponse(event=ev)

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext) -> pb.UpdateResponse:
        proc = self._select(request.process)
        if request.pty is not None and request.pty.size is not None:
            try:
                proc.resize(request.pty.size.cols, request.pty.size.rows)
            except ProcessError as e:
                raise error(e.kind, str(e)) from None
        return pb.UpdateResponse()

    async def _send(self, proc, data: pb.ProcessInput | None) -> None:
        try:
            match data.input if data is not None else None:
                case Oneof(field="stdin", value=chunk):
                    await proc.write_stdin(chunk)
                case Oneof(field="pty", value=chunk):
                    await proc.write_pty(chunk)
        except ProcessError as e:
            raise error(e.kind, str(e)) from None

    async def send_input(self, request: pb.SendInputRequest, ctx: RequestContext) -> pb.SendInputResponse:
        proc = self._select(request.process)
        await self._send(proc, request.input)
        return pb.SendInputResponse()

    async def stream_input(self, request: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext) -> pb.StreamInputResponse:
        proc = None
        async for msg in request:
            match msg.event:
                case Oneof(field="start", value=start):
                    proc = self._select(start.process)
                case Oneof(field="data", value=data):
                    if proc is None:
                        raise error("failed_precondition", "stream input must start with a start event")
                    await self._send(proc, data.input)
        return pb.StreamInputResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RequestContext) -> pb.SendSignalResponse:
        proc = self._select(request.process)
        sig = SIGNALS.get(request.signal)
        if sig is None:
            raise error("invalid_argument", f"invalid signal: {request.signal}")
        proc.signal(sig)
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RequestContext) -> pb.CloseStdinResponse:
        proc = self._select(request.process)
        try:
            proc.close_stdin()
        except ProcessError as e:
            raise error(e.kind, str(e)) from None
        return pb.CloseStdinResponse()
