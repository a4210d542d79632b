"""An in-memory counter program for pause/restore tests.

It publishes its count with write-then-rename, so a reader never sees the
empty file that ``open(path, "w")`` leaves between truncating and writing.
"""

from __future__ import annotations

from e2b import Sandbox

COUNTER = (
    "import os, time\n"
    "n = 0\n"
    "while True:\n"
    "    n += 1\n"
    "    with open('/tmp/count.tmp', 'w') as f:\n"
    "        f.write(str(n))\n"
    "    os.replace('/tmp/count.tmp', '/tmp/count')\n"
    "    time.sleep(0.05)\n"
)


def start_counter(sbx: Sandbox) -> None:
    """Start the counter in the background; it keeps its count only in memory."""
    sbx.files.write("/tmp/counter.py", COUNTER)
    sbx.commands.run("python3 /tmp/counter.py", background=True)


def read_count(sbx: Sandbox) -> int:
    return int(sbx.commands.run("cat /tmp/count").stdout.strip())
