"""``python -m sandlot.envd``: configure from the environment and serve (usually as pid 1)."""

from __future__ import annotations

from . import lean

lean.install()  # before anything imports asyncio, ssl or uvicorn: keeps what envd never uses out

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import uvicorn  # noqa: E402

from . import files_fast, reaper  # noqa: E402
from .server import EnvdApp  # noqa: E402
from .state import EnvdState  # noqa: E402


class _Server(uvicorn.Server):
    """As pid 1, SIGTERM/SIGINT must not stop envd, so uvicorn may not install handlers."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        if os.getpid() == 1:
            return contextlib.nullcontext()
        return super().capture_signals()


def load_state() -> EnvdState:
    state = EnvdState()
    raw = os.environ.get("SANDLOT_ENVD_INIT")
    if raw:
        try:
            state.apply_init(json.loads(raw))
        except (ValueError, AttributeError) as e:
            print(f"envd: ignoring invalid SANDLOT_ENVD_INIT: {e}", file=sys.stderr)
    return state


THREAD_RESERVE = 4
"""Worker threads started up front: threads count against the sandbox's pids limit, so once a
fork bomb holds every pid envd could not start one; file reads and stdin writes use these."""


def _reserve_threads(loop: asyncio.AbstractEventLoop) -> None:
    executor = ThreadPoolExecutor(max_workers=2 * THREAD_RESERVE, thread_name_prefix="envd")
    barrier = threading.Barrier(THREAD_RESERVE)
    for _ in range(THREAD_RESERVE):  # each blocks until all exist, so each submit adds a thread
        executor.submit(barrier.wait, 5.0)
    loop.set_default_executor(executor)


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reaper.install(loop)
    _reserve_threads(loop)
    app = EnvdApp(load_state())
    config = uvicorn.Config(
        app,
        host=os.environ.get("SANDLOT_ENVD_HOST", "0.0.0.0"),
        port=int(os.environ.get("SANDLOT_ENVD_PORT", "49983")),
        lifespan="off",
        http=files_fast.protocol_for(app.files),   # h11, and /files bodies without it
        loop="asyncio",
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's dictConfig would need logging.config (lean.py)
        timeout_keep_alive=300,
    )
    await _Server(config).serve()


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()
