"""In-process: ``/metrics`` and ``/admin/status`` (operator token), the state machine's hooks
feeding them, X-Request-Id, and the log redaction backstop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sandlot.logging_setup import REDACTED, redact
from tests.inprocess.conftest import StoreTemplate, start_stack, stop_stack

TOKEN = "op-" + "x" * 40


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_the_state_machine(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template, admin_token=TOKEN)
    try:
        client = stack.client
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"X-Admin-Token": "wrong"})).status_code == 401
        assert (await client.get("/metrics", headers=stack.headers())).status_code == 401   # an API key is no token
        ops = {"X-Admin-Token": TOKEN}

        first = (await stack.create())["sandboxID"]
        second = (await stack.create())["sandboxID"]
        assert (await client.post(f"/sandboxes/{first}/pause", headers=stack.headers())).status_code == 204
        assert (await client.post(f"/sandboxes/{first}/resume", headers=stack.headers(),
                                  json={"timeout": 60})).status_code == 201
        assert (await client.post(f"/sandboxes/{first}/snapshots", headers=stack.headers(), json={})).status_code < 300
        assert (await client.post(f"/sandboxes/{second}/pause", headers=stack.headers())).status_code == 204
        assert (await client.get("/sandboxes/nope-not-there", headers=stack.headers())).status_code == 404

        response = await client.get("/metrics", headers=ops)
        assert response.status_code == 200, response.text
        found = samples(response.text)
        listed = (await client.get("/v2/sandboxes", headers=stack.headers(),
                                   params={"state": "running,paused"})).json()
        by_state = {s: len([x for x in listed if x["state"] == s]) for s in ("running", "paused")}
        assert value(found, "sandlot_sandboxes", state="running") == by_state["running"] == 1
        assert value(found, "sandlot_sandboxes", state="paused") == by_state["paused"] == 1
        assert value(found, "sandlot_sandbox_creates_total") == 2
        assert value(found, "sandlot_sandbox_create_duration_seconds_count") == 2
        assert value(found, "sandlot_sandbox_pause_duration_seconds_count", outcome="ok") == 2
        assert value(found, "sandlot_sandbox_resume_duration_seconds_count", outcome="ok") == 1
        assert value(found, "sandlot_sandbox_snapshot_duration_seconds_count", outcome="ok") == 1
        assert value(found, "sandlot_http_requests_total", method="GET", route="/sandboxes/{sandbox_id}",
                     status="404") == 1
        assert value(found, "sandlot_template_builds", status="ready") >= 1
        assert [v for (name, _), v in found.items() if name == "sandlot_node_cpus"][0] > 0
        assert not [k for k in found if "nope-not-there" in str(k)]   # raw paths never become labels

        assert (await client.delete(f"/sandboxes/{second}", headers=stack.headers())).status_code == 204
        for _ in range(1000):   # a kill may finish its teardown in the background: loop steps, not time
            if stack.row(second) is None:
                break
            await asyncio.sleep(0)
        found = samples((await client.get("/metrics", headers=ops)).text)
        assert value(found, "sandlot_sandbox_kills_total") == 1
        assert value(found, "sandlot_sandboxes", state="paused") == 0

        status = (await client.get("/admin/status", headers=ops)).json()
        assert status["sandboxes"]["running"] == 1 and status["capacity"]["cpus"] > 0
        assert (await client.get("/admin/status", headers=stack.headers())).status_code == 401
    finally:
        await stop_stack(stack)


async def test_operator_routes_off_without_a_token(tmp_path: Path, store_template: StoreTemplate) -> None:
    stack = await start_stack(tmp_path, store_template)
    try:
        response = await stack.client.get("/metrics", headers={"X-Admin-Token": "anything"})
        assert response.status_code == 403 and "SANDLOT_ADMIN_TOKEN" in response.json()["message"]
    finally:
        await stop_stack(stack)


async def test_request_id_round_trip(stack: Any) -> None:
    given = (await stack.client.get("/sandboxes", headers={**stack.headers(), "X-Request-Id": "abc-123.x"}))
    assert given.headers["x-request-id"] == "abc-123.x"
    made = await stack.client.get("/sandboxes", headers={**stack.headers(), "X-Request-Id": "bad id\u00e9".encode("latin-1")})
    assert made.headers["x-request-id"] not in ("", "bad id\u00e9") and len(made.headers["x-request-id"]) == 32
    assert (await stack.client.get("/health")).headers["x-request-id"]


def test_redaction_backstop() -> None:
    key = "e2b_" + "0123456789abcdef" * 2 + "01234567"
    event = {"event": f"failed for {key}", "envd_access_token": "f" * 64, "headers": {"X-API-Key": key,
             "Authorization": "Bearer sk_e2b_" + "a" * 40, "accept": "json"}, "secret_id": "sec_1",
             "signatureSecret": "s3cr3t", "token": "t", "env_vars": {"A": "b"}, "error": "sk_e2b_" + "b" * 40}
    out = redact(None, "info", dict(event))
    assert key not in str(out) and "f" * 64 not in str(out) and "s3cr3t" not in str(out) and "a" * 40 not in str(out)
    assert out["secret_id"] == "sec_1" and out["headers"]["accept"] == "json"
    assert out["token"] == out["envd_access_token"] == out["env_vars"] == REDACTED
    assert "b" * 40 not in out["error"]


async def test_grafana_dashboard_uses_only_served_series(tmp_path: Path, store_template: StoreTemplate) -> None:
    """deploy/grafana/sandlot.json charts series that /metrics serves (a renamed metric breaks this)."""
    import json
    import re

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/sandlot.json").read_text())
    wanted = {name for panel in dashboard["panels"] for target in panel["targets"]
              for name in re.findall(r"\bsandlot_[a-z_]+", target["expr"])}
    stack = await start_stack(tmp_path, store_template, admin_token=TOKEN)
    try:
        await stack.create()
        await stack.client.get("/sandboxes/x", headers=stack.headers())
        text = (await stack.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    finally:
        await stop_stack(stack)
    def family(name: str) -> str:   # histograms' and counters' series → their family
        return re.sub(r"_(bucket|count|sum|total)$", "", name)

    served = {family(f.name) for f in text_string_to_metric_families(text)}   # families, with or without samples
    assert wanted and {family(n) for n in wanted} <= served, {family(n) for n in wanted} - served


async def test_metrics_listener_serves_only_metrics(tmp_path: Path, store_template: StoreTemplate) -> None:
    """SANDLOT_METRICS_LISTEN's listener: GET /metrics without a token, nothing else."""
    import httpx

    from sandlot.api import metrics_listener

    assert metrics_listener.parse_listen("[::1]:9464") == ("::1", 9464)
    stack = await start_stack(tmp_path, store_template)
    server = await metrics_listener.serve("127.0.0.1", 0, stack.app.api.state.telemetry.render)
    try:
        await stack.create()
        port = server.sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            scraped = await client.get("/metrics")
            assert scraped.status_code == 200
            assert value(samples(scraped.text), "sandlot_sandboxes", state="running") == 1
            assert (await client.get("/sandboxes")).status_code == 404
            assert (await client.post("/metrics")).status_code == 404
    finally:
        server.close()
        await stop_stack(stack)
