"""Prime volumes with the unmodified SDK: CRUD, private copies, publish, stale-head 409, teams.

``sdk_volumes.py <tag> <other team's key>``; prints one JSON object of what it saw. Every
sandbox and volume it makes is deleted before it exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from prime_sandboxes import APIClient, AsyncSandboxClient, CreateSandboxRequest, SandboxClient, VolumeMount


def error_of(call: Any) -> str:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def start(client: SandboxClient, name: str, volume: str, **mount: Any) -> str:
    sandbox = client.create(CreateSandboxRequest(
        name=name, docker_image="base", volumes=[VolumeMount(name=volume, mount_path="/data", **mount)]))
    client.wait_for_creation(sandbox.id)
    return sandbox.id


def sh(client: SandboxClient, sandbox_id: str, command: str) -> str:
    result = client.execute_command(sandbox_id, command)
    assert result.exit_code == 0, (command, result.stdout, result.stderr)
    return result.stdout


async def async_part(name: str) -> dict[str, Any]:
    client = AsyncSandboxClient()
    try:
        got = await client.volumes.get(name)
        listed = await client.volumes.list()
        return {"head": got.head_checkpoint_id, "names": [v.name for v in listed.volumes]}
    finally:
        await client.aclose()


def main() -> dict[str, Any]:
    tag, other_key = sys.argv[1], sys.argv[2]
    client = SandboxClient(APIClient())
    other = SandboxClient(APIClient(api_key=other_key))
    name = f"vol-{tag}"
    out: dict[str, Any] = {}
    sandboxes: list[str] = []
    try:
        out["created"] = client.volumes.create(name).model_dump(mode="json")
        out["duplicate"] = error_of(lambda: client.volumes.create(name))
        out["bad_name"] = error_of(lambda: client.volumes.create("no/slash"))
        listed = client.volumes.list()
        out["listed"] = [v.name for v in listed.volumes]
        out["listed_total"] = listed.total

        # a sandbox writes into its private copy and publishes it: the new head
        first = start(client, f"w1-{tag}", name)
        sandboxes.append(first)
        sh(client, first, "echo one > /data/f.txt && sync")
        checkpoint = client.volumes.publish(first, name)
        out["published"] = checkpoint.model_dump(mode="json")
        out["head_after_publish"] = client.volumes.get(name).head_checkpoint_id
        out["republish"] = client.volumes.publish(first, name).state   # its copy is at the head again
        out["checkpoint_attached"] = error_of(lambda: client.checkpoint(first))

        # two sandboxes from the same head: the first publish wins, the second is stale (409)
        second = start(client, f"w2-{tag}", name)
        third = start(client, f"w3-{tag}", name)
        sandboxes += [second, third]
        out["second_sees"] = sh(client, second, "cat /data/f.txt")
        sh(client, second, "echo two > /data/f.txt")
        sh(client, third, "echo three > /data/f.txt")
        out["third_private"] = sh(client, third, "cat /data/f.txt")
        out["second_publish"] = client.volumes.publish(second, name).state
        out["third_publish"] = error_of(lambda: client.volumes.publish(third, name))
        out["unattached_publish"] = error_of(lambda: client.volumes.publish(third, f"none-{tag}"))

        # a read-only attachment cannot publish (400)
        reader = start(client, f"r-{tag}", name, read_only=True)
        sandboxes.append(reader)
        out["reader_sees"] = sh(client, reader, "cat /data/f.txt")
        out["reader_write"] = client.execute_command(reader, "echo x > /data/g.txt").exit_code
        out["reader_publish"] = error_of(lambda: client.volumes.publish(reader, name))

        # another team: sees nothing, cannot publish this team's sandbox, has its own names
        out["other_listed"] = [v.name for v in other.volumes.list().volumes]
        out["other_get"] = error_of(lambda: other.volumes.get(name))
        out["other_publish"] = error_of(lambda: other.volumes.publish(second, name))
        out["other_delete"] = error_of(lambda: other.volumes.delete(name))
        out["other_same_name"] = other.volumes.create(name).name
        other.volumes.delete(name)

        out["async"] = asyncio.run(async_part(name))
        out["delete_attached"] = error_of(lambda: client.volumes.delete(name))
        for sandbox_id in sandboxes:
            client.delete(sandbox_id)
        sandboxes.clear()

        # a sandbox created later starts from the head the second sandbox published
        later = start(client, f"w4-{tag}", name)
        sandboxes.append(later)
        out["later_sees"] = sh(client, later, "cat /data/f.txt")
        client.delete(later)
        sandboxes.clear()
        client.volumes.delete(name)
        out["deleted_get"] = error_of(lambda: client.volumes.get(name))
    finally:
        for sandbox_id in sandboxes:
            error_of(lambda sid=sandbox_id: client.delete(sid))
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
