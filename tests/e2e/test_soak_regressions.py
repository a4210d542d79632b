"""Bugs bench/soak.py found, each pinned by a deterministic reproduction (issue 12)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2b import Sandbox

from sandlot import ids
from tests.e2e.server import Server, unique_instance, unique_subnet

pytestmark = pytest.mark.slow


def test_a_sandbox_frozen_by_a_killed_server_answers_after_the_restart(tmp_path: Path) -> None:
    """``kill -9`` of the server between a snapshot's (or fork's) ``runc pause`` and its
    ``runc resume`` left the container frozen: after the restart every command hung and every
    snapshot failed with "container not running". Reproduced by freezing it the same way."""
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("a"),
                    subnet=unique_subnet(11))
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    try:
        sbx = Sandbox.create(timeout=300, **opts)
        sbx.files.write("kept.txt", "still here")
        runc_root = tmp_path / "run" / "runc"
        subprocess.run(["runc", "--root", str(runc_root), "pause", sbx.sandbox_id], check=True)
        assert "paused" in subprocess.run(["runc", "--root", str(runc_root), "state", sbx.sandbox_id],
                                          capture_output=True, text=True, check=True).stdout
        server.process.kill()     # what the soak's fault did mid-snapshot
        server.process.wait()
        server.process = None
        server.start()

        again = Sandbox.connect(sbx.sandbox_id, **opts)
        assert again.commands.run("cat kept.txt", timeout=30).stdout == "still here"
        snap = again.create_snapshot()
        clone = Sandbox.create(snap.snapshot_id, timeout=60, **opts)
        assert clone.files.read("kept.txt") == "still here"
        clone.kill()
        Sandbox.delete_snapshot(snap.snapshot_id, **opts)
        again.kill()
    finally:
        server.reset()
