"""Attacks on what the Prime parity routes read back from a sandbox (issue 15).

The server reads tenant-shaped files for ``exitCode`` (the start command's exit file),
``GET /sandbox/{id}/logs`` (its log) and the background-job batch (``/tmp/job_<id>.exit``).
A hostile sandbox replaces them with endless files (a symlink to ``/dev/zero``), floods and
shell syntax; job ids in the request are shaped to escape the script. The server must answer
bounded, trust nothing it read beyond a small number, never run what it read, and the host
canary must stay absent. The legitimate feature is checked next to each attack.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import Sandbox

from tests.e2e.server import Server

EXIT_FILE = "/var/log/sandlot-start-command.exit"
LOG_FILE = "/var/log/sandlot-start-command.log"
JOB = "0123abcd"


@pytest.fixture
def canary() -> Iterator[Path]:
    d = Path(f"/tmp/sandlot-canary-{uuid.uuid4().hex[:10]}")
    d.mkdir()
    try:
        yield d / "pwned"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=60)


def running(client: httpx.Client, body: dict[str, Any]) -> str:
    sandbox_id: str = client.post("/sandbox", json=body).json()["id"]
    deadline = time.monotonic() + 90
    while client.get(f"/sandbox/{sandbox_id}").json()["status"] != "RUNNING":
        assert time.monotonic() < deadline, "the sandbox did not start"
        time.sleep(0.5)
    return sandbox_id


def exit_code(client: httpx.Client, sandbox_id: str, wanted: int | None) -> int | None:
    deadline = time.monotonic() + 30
    while True:
        code: int | None = client.get(f"/sandbox/{sandbox_id}").json()["exitCode"]
        if code == wanted or time.monotonic() > deadline:
            return code
        time.sleep(0.5)


def batch(client: httpx.Client, sandbox_id: str, job_id: str = JOB) -> httpx.Response:
    return client.post("/sandbox/background-jobs/status:batchGet", json={"jobs": [{"sandbox_id": sandbox_id, "job_id": job_id}]})


def test_tenant_shaped_exit_and_log_files_are_read_bounded(server: Server, canary: Path) -> None:
    with api(server) as client:
        sandbox_id = running(client, {"name": "hostile", "docker_image": "base",
                                      "start_command": {"executable": "sh", "args": ["-c", "echo hello; exit 3"]}})
        try:
            assert exit_code(client, sandbox_id, 3) == 3   # the feature
            assert client.get(f"/sandbox/{sandbox_id}/logs").json()["logs"] == "hello\n"
            sbx = Sandbox.connect(sandbox_id)
            # endless files: a bounded read, no exit code believed, the log capped at 4 MiB
            sbx.commands.run(f"ln -sf /dev/zero {EXIT_FILE} && ln -sf /dev/zero {LOG_FILE}", user="root")
            assert client.get(f"/sandbox/{sandbox_id}").json()["exitCode"] is None
            logs = client.get(f"/sandbox/{sandbox_id}/logs")
            assert logs.status_code == 200 and len(logs.json()["logs"]) == 4 << 20
            sbx.commands.run(f"rm -f {EXIT_FILE}", user="root")
            # shell syntax and out-of-range numbers are not exit codes, and never run
            for content in (f"3$(touch {canary})", f"`touch {canary}`", "99999", "-1", "3\n4"):
                sbx.files.write(EXIT_FILE, content, user="root")
                assert client.get(f"/sandbox/{sandbox_id}").json()["exitCode"] is None, content
            sbx.files.write(EXIT_FILE, "42\n", user="root")
            assert client.get(f"/sandbox/{sandbox_id}").json()["exitCode"] == 42
        finally:
            client.delete(f"/sandbox/{sandbox_id}")
    assert not canary.exists()


def test_background_job_status_never_runs_what_it_reads(server: Server, canary: Path) -> None:
    with api(server) as client:
        sandbox_id = running(client, {"name": "hostile-jobs", "docker_image": "base"})
        try:
            sbx = Sandbox.connect(sandbox_id)
            exit_file = f"/tmp/job_{JOB}.exit"
            for content in (f"0$(touch {canary})", f"`touch {canary}`", "7" * 200_000):
                sbx.files.write(exit_file, content, user="root")
                answer = batch(client, sandbox_id)
                assert answer.status_code == 200, answer.text
                assert answer.json()["statuses"] == [] and answer.json()["errors"][0]["code"] == "RUNTIME_ERROR"
            sbx.commands.run(f"ln -sf /dev/zero {exit_file}", user="root")   # grep sees binary: no number
            assert batch(client, sandbox_id).json()["statuses"] == []
            # job ids shaped to escape the script never reach it
            for job_id in (f"$(touch {canary})", "0123abc;", "../../../..", "0123abcd\n"):
                assert batch(client, sandbox_id, job_id).status_code == 422
            sbx.commands.run(f"rm -f {exit_file}", user="root")
            sbx.files.write(exit_file, "0\n", user="root")   # the feature
            ok = batch(client, sandbox_id).json()
            assert ok["statuses"] == [{"sandbox_id": sandbox_id, "job_id": JOB, "completed": True, "exit_code": 0}]
        finally:
            client.delete(f"/sandbox/{sandbox_id}")
    assert not canary.exists()
