"""Run a benchmark against ``E2B_API_URL`` if set, else against a private `sandlot serve`."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def with_server(benchmark: Callable[[], None], extra_env: dict[str, str] | None = None) -> None:
    """Call ``benchmark`` with the E2B SDK environment pointing at a Sandlot server
    (a private one started with ``extra_env`` unless ``E2B_API_URL`` is set)."""
    if os.environ.get("E2B_API_URL"):
        benchmark()
        return
    from sandlot import ids
    from tests.e2e.server import Server, sdk_pointed_at

    with tempfile.TemporaryDirectory(prefix="sandlot-bench-") as workdir:
        # benchmarks may run more sandboxes than a team's default quota (sandlot/quotas.py)
        env = {"SANDLOT_QUOTA_CONCURRENT_SANDBOXES": "0", **(extra_env or {})}
        server = Server(workdir=Path(workdir), api_key=ids.new_api_key(), extra_env=env)
        server.start()
        try:
            with sdk_pointed_at(server):
                benchmark()
        finally:
            server.stop()
