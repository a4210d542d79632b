"""A live process through the command-session RPCs: Start (stdin), SendInput, SendSignal."""

from __future__ import annotations

import asyncio
import json

from prime_sandboxes import AsyncSandboxClient, CreateSandboxRequest


async def main() -> dict:
    client = AsyncSandboxClient()
    sandbox = await client.create(CreateSandboxRequest(name="process", docker_image="base", timeout_minutes=5))
    await client.wait_for_creation(sandbox.id)
    out: dict = {}
    try:
        process = await client.open_process(sandbox.id, "read line; echo got:$line; read again; echo also:$again; sleep 300")
        out["pid_positive"] = process.pid > 0
        await process.write_stdin(b"first\n")
        await process.write_stdin(b"second\n")
        seen = b""
        async for chunk in process.stdout:
            seen += chunk
            if b"also:" in seen:
                break
        out["stdout"] = seen.decode()
        await process.kill()
        out["returncode"] = await asyncio.wait_for(process.wait(), 30)
        await process.aclose()
    finally:
        await client.delete(sandbox.id)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
