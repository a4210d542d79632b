"""Contexts: one Jupyter kernel each, started and driven with ``jupyter_client``.

Python and Bash kernels talk to us over ZeroMQ ``ipc`` sockets in the abstract unix
namespace (``@…``), not loopback TCP: a template's post-ready memory snapshot (CRIU) restores
unix sockets between processes it dumped but closes TCP connections, and abstract names leave
no socket files on the disk that the snapshot copies. Deno's kernel, IRkernel and JJava only
build ``tcp://ip:port`` addresses, so they use loopback TCP (none of them is in the snapshot).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from sandlot.code_interpreter.languages import IPC_KERNELS, kernel_language, normalize

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
"""``%matplotlib inline``: pyplot figures come back as ``image/png`` display data."""
_SERVER_ONLY_ENV = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
"""Set for this server (its code lives in the envd runtime), not for user code."""
IPYTHON_STARTUP = Path(__file__).with_name("ipython_startup.py")
"""Run by every Python kernel at start: E2B's ``e2b/chart``, ``e2b/data`` and JSON formatters."""


class UnsupportedLanguage(Exception):
    def __init__(self, language: str, available: list[str]) -> None:
        names = ", ".join(available) or "none"
        super().__init__(
            f"Language '{language}' is not supported by this code interpreter: no Jupyter kernel for it is "
            f"installed in the sandbox (available: {names})"
        )


class ContextNotFound(Exception):
    pass


def kernel_languages() -> dict[str, str]:
    """Installed kernels by the language they run (``python`` → ``python3``)."""
    found: dict[str, str] = {}
    for name, info in sorted(KernelSpecManager().get_all_specs().items()):
        language = str(info.get("spec", {}).get("language", "")).lower()
        if language and (language not in found or name == "python3"):
            found[language] = name
    return found


@dataclass
class Kernel:
    """One context: a kernel process, our client to it and what we know of its env."""

    id: str
    language: str
    cwd: str
    spec_name: str
    runtime_dir: Path
    manager: AsyncKernelManager | None = None
    client: AsyncKernelClient | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Environment of the kernel as set by us (launch env + injected variables)."""
    envs_loaded: bool = False
    """The sandbox's env vars (envd ``/envs``) were injected; done on the first execution."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One execution at a time: a kernel runs cells in order and we match output by msg id."""
    removed: bool = False
    """Deleted: cells still queued on it end instead of bringing it back."""

    @property
    def kernel_language(self) -> str:
        return kernel_language(self.language)

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ONLY_ENV}
        env["MPLBACKEND"] = INLINE_BACKEND
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ipc = self.kernel_language in IPC_KERNELS
        manager = AsyncKernelManager(
            kernel_name=self.spec_name, transport="ipc" if ipc else "tcp",
            ip=f"@sandlot-kernel-{self.id}" if ipc else "127.0.0.1",
            connection_file=str(self.runtime_dir / f"kernel-{self.id}.json"),
        )
        extra: list[str] = []
        if self.kernel_language == "python":
            # IPython's sqlite history would outlive a post-ready snapshot badly (sqlite sees its
            # file "moved" after the restore and refuses writes); in-memory history is enough
            extra = ["--HistoryManager.hist_file=:memory:", f"--IPKernelApp.exec_files={IPYTHON_STARTUP}"]
        await manager.start_kernel(env=env, cwd=self.cwd, extra_arguments=extra)
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
        except BaseException:
            client.stop_channels()
            await manager.shutdown_kernel(now=True)
            raise
        self.manager, self.client, self.env, self.envs_loaded = manager, client, env, False

    async def stop(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        if self.manager is not None:
            await self.manager.shutdown_kernel(now=True)  # also removes the connection file
        self.manager = self.client = None

    async def restart(self) -> None:
        """A fresh kernel process under the same id (state and injected env are gone)."""
        await self.stop()
        await self.start()

    async def alive(self) -> bool:
        return self.manager is not None and await self.manager.is_alive()

    async def interrupt(self) -> None:
        if self.manager is not None and await self.manager.is_alive():
            await self.manager.interrupt_kernel()

    def describe(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


class Contexts:
    """The server's contexts, plus one default context per language (made on first use)."""

    def __init__(self, runtime_dir: Path, default_cwd: str) -> None:
        self.runtime_dir = runtime_dir
        self.default_cwd = default_cwd
        self.kernels: dict[str, Kernel] = {}
        self.defaults: dict[str, str] = {}
        self._languages: dict[str, str] | None = None
        self._default_lock = asyncio.Lock()

    def languages(self) -> dict[str, str]:
        if self._languages is None:
            self._languages = kernel_languages()
        return self._languages

    def spec_for(self, language: str) -> str:
        spec = self.languages().get(kernel_language(language))
        if spec is None:
            raise UnsupportedLanguage(language, sorted(self.languages()))
        return spec

    async def create(self, language: str | None, cwd: str | None) -> Kernel:
        name = normalize(language)
        kernel = Kernel(id=str(uuid.uuid4()), language=name, cwd=cwd or self.default_cwd,
                        spec_name=self.spec_for(name), runtime_dir=self.runtime_dir)
        await kernel.start()
        self.kernels[kernel.id] = kernel
        return kernel

    async def default(self, language: str | None) -> Kernel:
        name = normalize(language)
        async with self._default_lock:
            kernel = self.kernels.get(self.defaults.get(name, ""))
            if kernel is None:
                kernel = await self.create(name, None)
                self.defaults[name] = kernel.id
            return kernel

    def get(self, context_id: str) -> Kernel:
        kernel = self.kernels.get(context_id)
        if kernel is None:
            raise ContextNotFound(f"Context {context_id} not found")
        return kernel

    async def restart(self, context_id: str) -> None:
        """A fresh kernel process under the same id (state and injected env are gone)."""
        kernel = self.get(context_id)
        async with kernel.lock:
            await kernel.restart()

    async def remove(self, context_id: str) -> None:
        kernel = self.kernels.pop(context_id, None)
        if kernel is None:
            raise ContextNotFound(f"Context {context_id} not found")
        self.defaults = {k: v for k, v in self.defaults.items() if v != context_id}
        kernel.removed = True
        await kernel.stop()

    async def close(self) -> None:
        kernels, self.kernels, self.defaults = list(self.kernels.values()), {}, {}
        await asyncio.gather(*(k.stop() for k in kernels), return_exceptions=True)
