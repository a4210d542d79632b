"""Prime parity with the unmodified SDK: checkpoints, create from a checkpoint, egress policies,
background-job batch status, exitCode; volumes are tested by ``sdk_volumes.py``. Prints one JSON object of what it saw.

``sdk_parity.py <tag>``; every sandbox it makes is deleted before it exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from prime_sandboxes import APIClient, AsyncSandboxClient, CreateSandboxRequest, SandboxClient


def wait_exit_code(client: SandboxClient, sandbox_id: str, timeout_s: float = 60) -> int | None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = client.get(sandbox_id).exit_code
        if code is not None or time.monotonic() > deadline:
            return code
        time.sleep(0.5)


def error_of(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


async def async_part(sandbox_id: str, checkpoint_id: str) -> dict[str, Any]:
    client = AsyncSandboxClient()
    try:
        got = await client.get_checkpoint(checkpoint_id)
        listed = await client.list_checkpoints(sandbox_id)
        network = await client.get_network(sandbox_id)
        return {"checkpoint": got.id, "listed": [c.id for c in listed], "policy": network.policy.model_dump()}
    finally:
        await client.aclose()


def main() -> dict[str, Any]:
    tag = sys.argv[1]
    client = SandboxClient(APIClient())
    out: dict[str, Any] = {}
    made: list[str] = []
    try:
        source = client.create(CreateSandboxRequest(
            name=f"parity-{tag}", docker_image="base", labels=[tag],
            start_command={"executable": "sh", "args": ["-c", "echo started-$PARITY; exit 5"]},
            environment_vars={"PARITY": tag}))
        made.append(source.id)
        client.wait_for_creation(source.id)
        out["exit_code"] = wait_exit_code(client, source.id)
        out["logs"] = client.get_logs(source.id)

        # background jobs: the batch endpoint, not the SDK's one-command-per-job fallback
        fast = client.start_background_job(source.id, "echo out; exit 4")
        slow = client.start_background_job(source.id, "sleep 600")
        deadline = time.monotonic() + 60
        while True:
            statuses = client.get_background_job_statuses([fast, slow])
            if statuses[0].completed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        out["jobs"] = [s.model_dump() for s in statuses]
        out["jobs_batched"] = client._background_job_status_batch_supported
        out["job_output"] = client.get_background_job(source.id, fast).stdout

        # checkpoint: a file written before it is in the restored sandbox, one written after is not
        client.execute_command(source.id, "echo before > /root/marker")
        checkpoint = client.checkpoint(source.id)
        durable = client.wait_for_checkpoint(checkpoint.id, timeout_seconds=120)
        client.execute_command(source.id, "echo after > /root/marker; echo later > /root/later")
        out["checkpoint"] = durable.model_dump(mode="json")
        out["listed"] = [c.id for c in client.list_checkpoints(source.id)]
        batch = client.get_checkpoints([checkpoint.id, "nosuchcheckpoint"])
        out["batch"] = {"found": [c.id for c in batch.checkpoints], "errors": [e.model_dump() for e in batch.errors]}
        out["checkpoint_batched"] = client._checkpoint_batch_supported

        restored = client.create(CreateSandboxRequest(name=f"restored-{tag}", checkpoint_id=checkpoint.id,
                                                      labels=[tag]))
        made.append(restored.id)
        client.wait_for_creation(restored.id)
        out["restored"] = client.get(restored.id).model_dump(mode="json")
        out["restored_files"] = client.execute_command(
            restored.id, "cat /root/marker; test -e /root/later && echo later-leaked || echo no-later").stdout
        out["restored_exit_code"] = wait_exit_code(client, restored.id)
        child = client.wait_for_checkpoint(client.checkpoint(restored.id).id, timeout_seconds=120)
        out["child"] = {"parent_id": child.parent_id, "depth": child.depth}

        # egress policy: replace, read back, and see it enforced in the sandbox
        out["policy_before"] = client.get_network(source.id).model_dump()
        denied = client.set_network(source.id, deny=["10.255.255.1"])
        out["policy_denied"] = denied.model_dump()
        out["policy_read"] = client.get_network(source.id).model_dump()
        everything = client.set_network(source.id, allow=["*"])
        out["policy_all"] = everything.policy.model_dump()
        out["policy_bad"] = error_of(lambda: client.client.request(
            "PUT", f"/sandbox/{source.id}/egress-policy", json={"allowlist": ["a"], "denylist": ["b"]}))

        out["async"] = asyncio.run(async_part(source.id, checkpoint.id))

        out["volume_on_restore"] = error_of(lambda: client.create(CreateSandboxRequest(
            name="v", checkpoint_id=checkpoint.id, volumes=[{"name": "x", "mount_path": "/data"}])))

        client.delete_checkpoint(checkpoint.id)
        out["deleted_get"] = error_of(lambda: client.get_checkpoint(checkpoint.id))
        out["delete_all"] = client.delete_sandbox_checkpoints(restored.id).model_dump()
        out["restored_still"] = client.get(restored.id).status
    finally:
        for sandbox_id in made:
            try:
                client.delete(sandbox_id)
            except Exception:
                pass
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
