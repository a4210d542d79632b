"""create → wait_for_creation → execute_command → upload/download/read_file → background job.

The sandbox is left running (the test checks it through the E2B API, then deletes it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from prime_sandboxes import APIClient, CreateSandboxRequest, SandboxClient
from prime_sandboxes.exceptions import SandboxFileNotFoundError


def main() -> dict:
    client = SandboxClient(APIClient())
    out: dict = {}
    sandbox = client.create(
        CreateSandboxRequest(
            name="lifecycle",
            docker_image="base",
            labels=["prime-e2e", sys.argv[1]],
            environment_vars={"GREETING": "hi"},
            secrets={"TOKEN": "s3cret"},
            timeout_minutes=10,
            cpu_cores=1,
            memory_gb=1,
            disk_size_gb=2,
        )
    )
    out["created"] = sandbox.model_dump(mode="json")
    client.wait_for_creation(sandbox.id)
    out["running"] = client.get(sandbox.id).model_dump(mode="json")
    out["exec"] = client.execute_command(sandbox.id, "echo $GREETING $TOKEN; whoami; echo oops >&2; exit 3").model_dump()
    out["exec_user"] = client.execute_command(sandbox.id, "whoami; pwd", user="user", working_dir="/tmp").model_dump()
    out["exec_env"] = client.execute_command(sandbox.id, "echo $A-$B", env={"A": "1", "B": "2"}).model_dump()
    out["disk_mb"] = int(client.execute_command(sandbox.id, "df -m --output=size / | tail -1").stdout)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "in.bin")
        payload = bytes(range(256)) * 40
        with open(local, "wb") as handle:
            handle.write(payload)
        out["upload"] = client.upload_file(sandbox.id, "/tmp/data/in.bin", local).model_dump(mode="json")
        back = os.path.join(tmp, "out.bin")
        client.download_file(sandbox.id, "/tmp/data/in.bin", back)
        out["download_equal"] = open(back, "rb").read() == payload
    client.execute_command(sandbox.id, "printf 'line1\\nline2\\nline3\\n' > /tmp/text.txt")
    out["read"] = client.read_file(sandbox.id, "/tmp/text.txt").model_dump()
    out["read_tail"] = client.read_file(sandbox.id, "/tmp/text.txt", offset=-6, length=6).model_dump()
    out["read_window"] = client.read_file(sandbox.id, "/tmp/text.txt", offset=6, length=5).model_dump()
    try:
        client.read_file(sandbox.id, "/tmp/missing.txt")
        out["read_missing"] = "no error"
    except SandboxFileNotFoundError as exc:
        out["read_missing"] = type(exc).__name__
    job = client.start_background_job(sandbox.id, "sleep 2; echo job-out; echo job-err >&2; exit 7")
    first = client.get_background_job(sandbox.id, job)
    out["job_first_completed"] = first.completed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get_background_job(sandbox.id, job)
        if status.completed:
            break
        time.sleep(0.5)
    out["job"] = status.model_dump()
    out["id"] = sandbox.id
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
