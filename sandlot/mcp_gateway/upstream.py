"""The spawned MCP servers as stdio clients of the gateway (the official ``mcp`` package).

``mcp``'s own ``stdio_client`` spawns the process itself; the gateway spawns them earlier
(``spawn.py``), so this is the same newline-delimited JSON-RPC transport over a process that
already runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import mcp_types as types
from anyio.abc import Process, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import Client
from mcp.shared.message import SessionMessage

from sandlot.mcp_gateway.config import Plan
from sandlot.mcp_gateway.spawn import Spawned, failure

MAX_TOOL_PAGES = 100
MAX_LINE_BYTES = 64 << 20
"""One JSON-RPC message from a server (a tool result with a big file inside)."""
STOP_GRACE_S = 2.0

Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]


@dataclass
class Upstream:
    plan: Plan
    client: Client
    tools: list[types.Tool]


def _message(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as e:  # the session reports it; the server may still answer the rest
        return e


@asynccontextmanager
async def process_transport(process: Process) -> AsyncIterator[Streams]:
    """``(read, write)`` streams of session messages over ``process``'s stdout/stdin; the
    process is terminated (then killed) on exit."""
    read_in, read_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_in, write_out = anyio.create_memory_object_stream[SessionMessage](0)
    assert process.stdout is not None and process.stdin is not None
    stdout, stdin = process.stdout, process.stdin

    async def reader() -> None:
        async with read_in:
            buffer = b""
            try:
                async for chunk in stdout:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    if len(buffer) > MAX_LINE_BYTES:
                        await read_in.send(ValueError("an MCP server sent a line longer than 64 MiB"))
                        return
                    for line in lines:
                        if line.strip():
                            await read_in.send(_message(line))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass

    async def writer() -> None:
        async with write_out:
            try:
                async for message in write_out:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await stdin.send(data.encode())
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await read_in.aclose()  # the session sees the end instead of a request hanging

    async with anyio.create_task_group() as group:
        group.start_soon(reader)
        group.start_soon(writer)
        try:
            yield read_out, write_in
        finally:
            group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await _stop(process)


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(STOP_GRACE_S):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


async def run(spawned: Spawned, *, task_status: TaskStatus[Upstream]) -> None:
    """Connect to ``spawned``, list its tools, report the :class:`Upstream` through
    ``task_status`` and keep the connection open until cancelled (``TaskGroup.start``:
    the caller bounds the start with its own timeout)."""
    plan, connected = spawned.plan, False
    try:
        async with Client(process_transport(spawned.process), mode="legacy") as client:
            tools: list[types.Tool] = []
            cursor: str | None = None
            for _ in range(MAX_TOOL_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools += page.tools
                cursor = page.next_cursor
                if not cursor:
                    break
            task_status.started(Upstream(plan, client, tools))
            connected = True
            await anyio.sleep_forever()
    except Exception as e:  # whatever the transport raised, the server's stderr says why
        spawned.errlog.flush()
        if not connected:
            raise failure(plan, "did not start", e) from None
        # a server that dies later leaves the others serving: its tools' calls fail
        print(f"MCP server '{plan.name}' stopped: {type(e).__name__}: {e}", flush=True)
    finally:
        spawned.errlog.close()
