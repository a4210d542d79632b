"""A sandbox cannot fill the host's disk through its own log (issue 10, part 5).

Attack: root in the sandbox writes 48 MiB to its init's stdout (``/proc/1/fd/1``), which the
host drains into ``envd.log``. Canary: the host-side files stay within the cap (one rotation,
``envd.log.1``). Legitimate: the sandbox keeps running and answering, and its latest output
is what the host kept. With user namespaces (the default) sandbox root cannot even open the
host-made pipe; without them it can, and the cap is what holds.
"""

from __future__ import annotations

import time
from pathlib import Path

from e2b import Sandbox
from e2b.sandbox.commands.command_handle import CommandExitException

from sandlot import ids
from sandlot.runtime import log_drain
from tests.e2e.server import Server, data_dir, sdk_pointed_at, unique_instance, unique_subnet

CAP = log_drain.MAX_BYTES   # the server's default (SANDLOT_SANDBOX_LOG_MAX_MB unset in tests)
FLOOD = "head -c 48M /dev/zero | tr '\\0' 'A' > /proc/1/fd/1; echo THE-LAST-WORDS > /proc/1/fd/1"


def _flood(sbx: Sandbox) -> bool:
    """Whether the sandbox could write to its init's stdout at all."""
    try:
        sbx.commands.run(FLOOD, user="root", timeout=120)
        return True
    except CommandExitException as e:
        assert "Permission denied" in e.stderr, e.stderr
        return False


def _host_logs(server: Server, sbx: Sandbox) -> Path:
    sdir = data_dir() / "runtime" / server.instance / "sandboxes" / sbx.sandbox_id
    # the drainer is a pipe behind: the sandbox answering again means it kept draining
    assert sbx.commands.run("echo alive", timeout=30).stdout.strip() == "alive"
    logs = {p.name: p.stat().st_size for p in sdir.glob("envd.log*")}
    assert set(logs) <= {"envd.log", "envd.log.1"} and all(size <= CAP for size in logs.values()), logs
    return sdir / "envd.log"


def _ends_with_marker(log: Path) -> bool:
    for _ in range(50):   # the drain may still be a few chunks behind the sandbox
        if b"THE-LAST-WORDS" in log.read_bytes()[-64:]:
            return True
        time.sleep(0.1)
    return False


def test_init_stdout_flood_is_refused_or_capped(server: Server, sandbox: Sandbox) -> None:
    wrote = _flood(sandbox)
    log = _host_logs(server, sandbox)
    if wrote:
        assert _ends_with_marker(log)


def test_init_stdout_flood_is_capped_without_user_namespaces(tmp_path: Path) -> None:
    srv = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("l"),
                 subnet=unique_subnet(4), extra_env={"SANDLOT_USERNS": "false", "SANDLOT_WARM_POOL_SIZE": "0"})
    srv.start()
    try:
        with sdk_pointed_at(srv):
            sbx = Sandbox.create(timeout=120)
            try:
                assert _flood(sbx)   # root is host root here: the pipe opens, the cap must hold
                assert _ends_with_marker(_host_logs(srv, sbx))
            finally:
                sbx.kill()
    finally:
        srv.stop()
