"""The host-side drainer of a sandbox's init stdio: a capped, rotated ``envd.log``.

A sandbox controls every byte its init writes (root in it can write to ``/proc/1/fd/1``), so
the host-side file must not grow with them: once ``envd.log`` would pass ``max_bytes`` it
becomes ``envd.log.1`` (the previous one is dropped) and a new file starts. At most
``2 * max_bytes`` stay on disk per sandbox, the latest output always in ``envd.log``.
The drainer never stops reading, even when a write fails (a full host disk): a sandbox must
not block on a full pipe.

Run detached as ``python -S -I log_drain.py LOG_PATH MAX_BYTES`` (stdin = the pipe): it
outlives a server restart, like the sandbox, and exits at EOF when the container is gone.
It imports nothing but ``os`` and ``sys`` (about 8 MB RSS, mostly shared).
"""
from __future__ import annotations

import os
import sys

CHUNK = 64 * 1024
MAX_BYTES = 4 * 1024 * 1024
"""Default per-file cap; the server sets it from ``SANDLOT_SANDBOX_LOG_MAX_MB``."""


def _open(path: str, truncate: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    return os.open(path, flags | (os.O_TRUNC if truncate else 0), 0o640)


def drain(src: int, path: str, max_bytes: int) -> None:
    fd = _open(path, truncate=False)
    size = os.fstat(fd).st_size
    while True:
        try:
            data = os.read(src, CHUNK)
        except InterruptedError:
            continue
        if not data:
            break
        if size + len(data) > max_bytes and size > 0:
            try:
                os.replace(path, path + ".1")
                new = _open(path, truncate=True)
            except OSError:
                new = None
            if new is not None:
                os.close(fd)
                fd, size = new, 0
        data = data[-max_bytes:]   # one read never exceeds the cap on its own
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            pass   # ENOSPC and the like: drop the bytes, keep draining
        size += len(data)
    os.close(fd)


def main() -> None:
    drain(0, sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    main()
