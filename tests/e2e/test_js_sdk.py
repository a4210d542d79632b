"""The unmodified e2b JS SDK (npm, Node's test runner) against the same real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import Server

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def _node_major() -> int:
    if shutil.which("node") is None:
        return 0
    out = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return int(out.lstrip("v").split(".")[0] or 0)


@pytest.mark.skipif(_node_major() < 20, reason="the e2b npm package needs Node >= 20")
def test_js_sdk_suite(server: Server) -> None:
    assert (JS_DIR / "node_modules" / "e2b").is_dir(), "run `make test` (it installs tests/js/node_modules)"
    env = dict(os.environ, E2B_API_URL=server.url, E2B_SANDBOX_URL=server.url, E2B_API_KEY=server.api_key)
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "sandbox.test.mjs"],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout or "✖" not in result.stdout
