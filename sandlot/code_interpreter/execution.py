"""One ``POST /execute``: run a cell in a context's kernel and stream its output lines.

The cell runs in its own task, apart from the HTTP response: when the client goes away
(its ``timeout``, a cancelled call) the response stops, and the task interrupts the kernel
and waits for it to settle before the context takes its next cell.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from queue import Empty
from typing import TYPE_CHECKING, Any

from sandlot.code_interpreter import messages
from sandlot.code_interpreter.kernels import Kernel
from sandlot.code_interpreter.languages import env_code
from sandlot.code_interpreter.messages import Line

if TYPE_CHECKING:
    from jupyter_client.asynchronous import AsyncKernelClient

SETTLE_AFTER_INTERRUPT_S = 10.0
"""How long an abandoned cell may take to stop after the interrupt before we move on."""
REPLY_TIMEOUT_S = 30.0
LATE_OUTPUT_QUIET_S = {"typescript": 0.05}
"""Kernels whose output may follow their ``idle`` status (Deno's), and how long a quiet iopub
channel must stay quiet before the cell is taken as done."""
LATE_OUTPUT_MAX_S = 2.0


class KernelDied(Exception):
    pass


def fetch_sandbox_envs(envd_url: str, token: str | None) -> dict[str, str]:
    """envd's ``GET /envs``: the env vars the sandbox was created with (spec §5.1)."""
    request = urllib.request.Request(f"{envd_url}/envs", headers={"X-Access-Token": token} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        data = json.loads(response.read() or b"{}")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class Execution:
    def __init__(self, kernel: Kernel, code: str, env_vars: dict[str, str], *, envd_url: str,
                 access_token: str | None) -> None:
        self.kernel = kernel
        self.code = code
        self.env_vars = env_vars
        self.envd_url = envd_url
        self.access_token = access_token
        self.queue: asyncio.Queue[Line] = asyncio.Queue()
        self.abandoned = False
        self._abandoned_at = 0.0
        self._running = False
        self.task = asyncio.create_task(self._run())

    async def lines(self, keepalive_s: float) -> AsyncIterator[Line]:
        """Output lines as they come, a keepalive when the cell is quiet, ``end_of_execution`` last."""
        getter: asyncio.Future[Line] | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait({getter}, timeout=keepalive_s)
                if not done:
                    yield messages.KEEPALIVE
                    continue
                line, getter = getter.result(), None
                yield line
                if line is messages.END:
                    return
        finally:
            if getter is not None:
                getter.cancel()

    def abandon(self) -> None:
        """The client is gone: interrupt the cell (its output is dropped from now on)."""
        if self.abandoned or self.task.done():
            return
        self.abandoned = True
        self._abandoned_at = time.monotonic()
        if self._running:
            asyncio.create_task(self.kernel.interrupt())

    # --- the task --------------------------------------------------------------------------

    def _emit(self, line: Line) -> None:
        if not self.abandoned or line is messages.END:
            self.queue.put_nowait(line)

    async def _run(self) -> None:
        kernel = self.kernel
        async with kernel.lock:
            restore: dict[str, str | None] = {}
            try:
                if self.abandoned:
                    return
                if kernel.removed:
                    raise KernelDied()
                if not await kernel.alive():  # died (e.g. os._exit, OOM): Jupyter would restart it
                    await kernel.restart()
                await self._load_sandbox_envs()
                restore = {k: kernel.env.get(k) for k in self.env_vars}
                if self.env_vars:
                    await self._set_env(self.env_vars, [])
                if self.abandoned:
                    return
                self._running = True
                msg_id = self._client().execute(self.code, store_history=True, allow_stdin=False,
                                                stop_on_error=False)
                if not await self._pump(msg_id):
                    # the interrupt did not stop it (a promise that never settles, a C call that
                    # ignores SIGINT): a fresh kernel, rather than every later cell queued behind it
                    print("code-interpreter: the interrupted cell did not stop; restarting its kernel",
                          file=sys.stderr, flush=True)
                    await kernel.restart()
                    restore = {}
            except KernelDied:
                self._emit(messages.UNEXPECTED_END)
                restore = {}
            except (Exception, asyncio.CancelledError) as exc:  # reported to the client as the cell's error
                if kernel.removed:  # deleted under the cell (closing its channels cancels our reads)
                    self._emit(messages.UNEXPECTED_END)
                    restore = {}
                    return
                if isinstance(exc, asyncio.CancelledError):
                    raise
                print(f"code-interpreter: execution failed: {exc!r}", file=sys.stderr, flush=True)
                self._emit({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": ""})
            finally:
                self._running = False
                self._emit(messages.END)
                if restore:
                    await self._restore_env(restore)

    def _client(self) -> AsyncKernelClient:
        if self.kernel.client is None:
            raise KernelDied()
        return self.kernel.client

    async def _pump(self, msg_id: str) -> bool:
        """Output lines until the cell is done; ``False`` when it was abandoned and did not
        stop within ``SETTLE_AFTER_INTERRUPT_S`` of the interrupt."""
        client = self._client()
        while True:
            if self.kernel.removed:
                raise KernelDied()
            try:
                msg = await client.get_iopub_msg(timeout=1.0)
            except Empty:
                if self.abandoned and time.monotonic() - self._abandoned_at > SETTLE_AFTER_INTERRUPT_S:
                    return False
                if not await self.kernel.alive():
                    raise KernelDied() from None
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                break
            line = messages.translate(msg)
            if line is not None:
                self._emit(line)
        await self._reply(msg_id, timeout=5.0)
        await self._late_output(msg_id)
        return True

    async def _late_output(self, msg_id: str) -> None:
        """Deno's kernel publishes a cell's ``console.log`` output (and at times its result)
        from another task than its ``idle`` status, so some arrive after it: take what still
        comes for this cell until the kernel has been quiet for a moment."""
        quiet = LATE_OUTPUT_QUIET_S.get(self.kernel.kernel_language)
        if quiet is None:
            return
        client = self._client()
        deadline = time.monotonic() + LATE_OUTPUT_MAX_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await client.get_iopub_msg(timeout=min(quiet, left))
            except Empty:
                return
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                line = messages.translate(msg)
                if line is not None:
                    self._emit(line)

    async def _reply(self, msg_id: str, timeout: float) -> dict[str, Any] | None:
        """The shell reply to ``msg_id`` (older unread replies are dropped on the way)."""
        client = self._client()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg: dict[str, Any] = await client.get_shell_msg(timeout=left)
            except Empty:
                return None
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg
        return None

    async def _silent(self, code: str) -> None:
        msg_id = self._client().execute(code, silent=True, store_history=False, allow_stdin=False,
                                        stop_on_error=False)
        await self._reply(msg_id, timeout=REPLY_TIMEOUT_S)

    async def _set_env(self, values: dict[str, str], removed: list[str]) -> None:
        code = env_code(self.kernel.kernel_language, values, removed)
        if code is None:
            return
        await self._silent(code)
        self.kernel.env.update(values)
        for key in removed:
            self.kernel.env.pop(key, None)

    async def _load_sandbox_envs(self) -> None:
        """Once per kernel: the env vars given at sandbox create (the kernel may have started
        before the sandbox got them: warm pool, post-ready snapshot)."""
        if self.kernel.envs_loaded:
            return
        try:
            envs = await asyncio.to_thread(fetch_sandbox_envs, self.envd_url, self.access_token)
        except Exception as exc:  # the cell still runs; we try again next time
            print(f"code-interpreter: could not read the sandbox env vars: {exc!r}", file=sys.stderr, flush=True)
            return
        if envs:
            await self._set_env(envs, [])
        self.kernel.envs_loaded = True

    async def _restore_env(self, previous: dict[str, str | None]) -> None:
        """Undo this execution's ``env_vars`` (they apply to this execution only)."""
        try:
            if not await self.kernel.alive():
                return
            await self._set_env({k: v for k, v in previous.items() if v is not None},
                                [k for k, v in previous.items() if v is None])
        except Exception as exc:
            print(f"code-interpreter: could not restore env vars: {exc!r}", file=sys.stderr, flush=True)
