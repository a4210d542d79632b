"""Run the unmodified Prime clients (SDK drivers, ``prime`` CLI) from their own venv against a Server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import REPO, Server

PRIME_VENV = REPO / ".venv-prime"
DRIVERS = REPO / "tests" / "prime" / "drivers"


def require_prime_venv() -> None:
    if not (PRIME_VENV / "bin" / "prime").exists():
        pytest.skip("the Prime clients' venv is missing: run `make prime-venv` (make test does)")


def prime_env(server: Server, home: Path) -> dict[str, str]:
    """Point SDK and CLI at the server; a private HOME keeps ~/.prime (auth cache, config) per test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRIME_", "E2B_"))}
    env.update({"PRIME_API_BASE_URL": server.url, "PRIME_API_KEY": server.api_key, "HOME": str(home), "NO_COLOR": "1"})
    return env


def driver(server: Server, home: Path, name: str, *args: str, timeout: float = 240) -> Any:
    require_prime_venv()
    proc = subprocess.run(
        [str(PRIME_VENV / "bin" / "python"), str(DRIVERS / f"{name}.py"), *args],
        env=prime_env(server, home), capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"driver {name} failed:\n{proc.stderr}\n{proc.stdout}\n--- server log ---\n{server.log_tail()}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def call(server: Server, home: Path, action: str, *args: Any, timeout: float = 240) -> Any:
    """One SDK call through ``sdk_call.py``; JSON arguments are encoded here."""
    encoded = [a if isinstance(a, str) else json.dumps(a) for a in args]
    return driver(server, home, "sdk_call", action, *encoded, timeout=timeout)


def cli(server: Server, home: Path, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    require_prime_venv()
    return subprocess.run(
        [str(PRIME_VENV / "bin" / "prime"), *args], env={**prime_env(server, home), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )
