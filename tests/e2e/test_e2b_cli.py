"""The unmodified `e2b` CLI (npm @e2b/cli) against a real server: templates and sandboxes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from e2b import Sandbox

from tests.e2e.server import Server
from tests.e2e.test_js_sdk import JS_DIR, _node_major

E2B_CLI = JS_DIR / "node_modules" / ".bin" / "e2b"

pytestmark = pytest.mark.skipif(_node_major() < 20, reason="the e2b CLI needs Node >= 20")


def _cli(server: Server, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        E2B_API_URL=server.url,
        E2B_SANDBOX_URL=server.url,
        E2B_API_KEY=server.api_key,
        NO_UPDATE_NOTIFIER="1",  # the CLI would otherwise ask the npm registry for updates
    )
    return subprocess.run([str(E2B_CLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_template_create_list_delete(server: Server, tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    (tmp_path / "e2b.Dockerfile").write_text(
        "FROM e2bdev/base\nRUN echo built-by-cli > /home/user/cli.txt\nENV CLI_VAR=yes\nWORKDIR /home/user\n"
    )
    created = _cli(server, "template", "create", name, cwd=tmp_path)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    listed = _cli(server, "template", "list")
    assert listed.returncode == 0 and name in listed.stdout
    with Sandbox.create(name, timeout=60) as sbx:
        assert sbx.commands.run("cat cli.txt; echo $CLI_VAR").stdout == "built-by-cli\nyes\n"
    deleted = _cli(server, "template", "delete", name, "-y")
    assert deleted.returncode == 0, deleted.stderr
    assert name not in _cli(server, "template", "list").stdout


def test_cli_sandbox_commands(server: Server) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        listed = _cli(server, "sandbox", "list")
        assert listed.returncode == 0 and sbx.sandbox_id in listed.stdout
        executed = _cli(server, "sandbox", "exec", sbx.sandbox_id, "echo", "hi-from-cli")
        assert executed.returncode == 0 and executed.stdout.strip() == "hi-from-cli"
        logs = _cli(server, "sandbox", "logs", sbx.sandbox_id, "--format", "json")
        assert logs.returncode == 0, logs.stderr
        records = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
        assert any(r.get("message") == "sandbox created" for r in records)
        metrics = _cli(server, "sandbox", "metrics", sbx.sandbox_id)
        assert metrics.returncode == 0 and "Memory" in metrics.stdout
        killed = _cli(server, "sandbox", "kill", sbx.sandbox_id)
        assert killed.returncode == 0
        assert not sbx.is_running()
    finally:
        sbx.kill()
