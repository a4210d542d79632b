"""Metrics from cgroup counters and lifecycle logs, through the SDK and the raw API."""

from __future__ import annotations

import json

import httpx
from e2b import AsyncSandbox, Sandbox

from tests.e2e.server import Server


def test_metrics_from_cgroups(sandbox: Sandbox, server: Server) -> None:
    sandbox.commands.run("python3 -c \"b = bytearray(64 * 1024 * 1024); import time; time.sleep(3)\"", background=True)
    sandbox.commands.run("sleep 1")
    metrics = sandbox.get_metrics()
    assert metrics, "at least one sample right after start"
    latest = metrics[-1]
    assert latest.cpu_count == 2
    assert latest.mem_total == 512 * 1024 * 1024
    assert 0 < latest.mem_used <= latest.mem_total
    assert latest.disk_total > 0 and latest.disk_used >= 0
    assert 0 <= latest.cpu_used_pct <= 100
    many = httpx.get(
        f"{server.url}/sandboxes/metrics",
        params={"sandbox_ids": sandbox.sandbox_id},
        headers={"X-API-Key": server.api_key},
    )
    assert many.status_code == 200
    assert many.json()["sandboxes"][sandbox.sandbox_id]["memTotal"] == 512 * 1024 * 1024


async def test_metrics_async(server: Server) -> None:
    sbx = await AsyncSandbox.create()
    try:
        metrics = await sbx.get_metrics()
        assert metrics and metrics[-1].mem_used > 0
    finally:
        await sbx.kill()


def test_lifecycle_logs(sandbox: Sandbox, server: Server) -> None:
    headers = {"X-API-Key": server.api_key}
    v1 = httpx.get(f"{server.url}/sandboxes/{sandbox.sandbox_id}/logs", headers=headers)
    assert v1.status_code == 200
    messages = [entry["message"] for entry in v1.json()["logEntries"]]
    assert "sandbox created" in messages
    first_line = json.loads(v1.json()["logs"][0]["line"])  # JSON records, as the e2b CLI expects
    assert first_line["message"] == "sandbox created" and first_line["level"] == "info"
    v2 = httpx.get(f"{server.url}/v2/sandboxes/{sandbox.sandbox_id}/logs", headers=headers, params={"level": "info"})
    assert v2.status_code == 200
    assert any(e["message"] == "sandbox created" and e["level"] == "info" for e in v2.json()["logs"])
    missing = httpx.get(f"{server.url}/sandboxes/iunknown00000000000000/logs", headers=headers)
    assert missing.status_code == 404 and missing.json()["code"] == 404
