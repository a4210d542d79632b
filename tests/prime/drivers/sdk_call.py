"""One Prime SDK call per invocation: ``sdk_call.py <action> [args...]`` → JSON on stdout.

Errors are reported as ``{"error": <exception class>, "message": ...}`` (exit 0) so tests
can assert on the SDK's typed exceptions.
"""

from __future__ import annotations

import json
import sys

from prime_sandboxes import APIClient, CreateSandboxRequest, SandboxClient


def main() -> object:
    client = SandboxClient(APIClient())
    action, args = sys.argv[1], sys.argv[2:]
    if action == "create":
        return client.create(CreateSandboxRequest(**json.loads(args[0]))).model_dump(mode="json")
    if action == "create_and_wait":
        sandbox = client.create(CreateSandboxRequest(**json.loads(args[0])))
        client.wait_for_creation(sandbox.id)
        return client.get(sandbox.id).model_dump(mode="json")
    if action == "wait":
        client.wait_for_creation(args[0])
        return {"ok": True}
    if action == "get":
        return client.get(args[0]).model_dump(mode="json")
    if action == "list":
        return client.list(**json.loads(args[0]) if args else {}).model_dump(mode="json")
    if action == "exec":
        return client.execute_command(args[0], args[1], **(json.loads(args[2]) if len(args) > 2 else {})).model_dump()
    if action == "delete":
        return client.delete(args[0])
    if action == "bulk_delete":
        return client.bulk_delete(**json.loads(args[0])).model_dump(mode="json")
    if action == "logs":
        return {"logs": client.get_logs(args[0])}
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    try:
        result = main()
    except Exception as exc:  # the test asserts on the SDK's exception type
        result = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(result))
