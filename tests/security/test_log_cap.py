"""A sandbox cannot fill the host's disk through its own log (issue 10, part 5).

Attack: root in the sandbox writes 48 MiB to its init's stdout (``/proc/1/fd/1``), which the
host drains into ``envd.log``. Canary: the host-side files stay within the cap (one rotation,
``envd.log.1``). Legitimate: the
sandbox keeps running and answering, and its latest output is what the host kept.
"""

from __future__ import annotations

import time

from e2b import Sandbox

from sandlot.runtime import log_drain
from tests.e2e.server import Server, data_dir

CAP = log_drain.MAX_BYTES   # the server's default (SANDLOT_SANDBOX_LOG_MAX_MB unset in tests)


def test_init_stdout_flood_is_capped_on_the_host(server: Server, sandbox: Sandbox) -> None:
    sdir = data_dir() / "runtime" / server.instance / "sandboxes" / sandbox.sandbox_id
    sandbox.commands.run(
        "head -c 48M /dev/zero | tr '\\0' 'A' > /proc/1/fd/1; echo THE-LAST-WORDS > /proc/1/fd/1",
        user="root", timeout=120)
    # the drainer is a pipe behind: the sandbox answering again means it kept draining
    assert sandbox.commands.run("echo alive", timeout=30).stdout.strip() == "alive"
    logs = {p.name: p.stat().st_size for p in sdir.glob("envd.log*")}
    assert set(logs) <= {"envd.log", "envd.log.1"} and all(size <= CAP for size in logs.values()), logs
    tail = (sdir / "envd.log").read_bytes()[-64:]
    for _ in range(50):   # the drain may still be a few chunks behind the sandbox
        if b"THE-LAST-WORDS" in tail:
            break
        time.sleep(0.1)
        tail = (sdir / "envd.log").read_bytes()[-64:]
    assert b"THE-LAST-WORDS" in tail
