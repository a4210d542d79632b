"""Every list, string and map the API stores is bounded (issue 12, part 2).

Attack: one request with megabytes of metadata, env vars, labels or network entries.
Checked: a clear 400 (E2B shape) or 422 (Prime's shape) naming the field, and nothing
stored (the list stays as it was). Legitimate: the largest allowed values are accepted and
come back in the list.
"""

from __future__ import annotations

import httpx
import pytest

from sandlot.api import limits
from tests.e2e.server import Server


def _e2b(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=60)


def _prime(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.api_key}"},
                        timeout=60)


HUGE_METADATA = {f"key{i}": "v" * 100 for i in range(20_000)}   # 2.2 MB, accepted before


@pytest.mark.parametrize(("body", "field"), [
    ({"metadata": HUGE_METADATA}, "metadata"),
    ({"metadata": {"k": "v" * (limits.METADATA_VALUE + 1)}}, "metadata.k"),
    ({"metadata": {"k" * (limits.METADATA_KEY + 1): "v"}}, "metadata"),
    ({"metadata": {f"k{i}": "v" * 2000 for i in range(40)}}, "metadata takes"),
    ({"envVars": {f"E{i}": "x" * 30_000 for i in range(5)}}, "environment variables take"),
    ({"envVars": {f"E{i}": "" for i in range(limits.ENV_ENTRIES + 1)}}, "envVars"),
    ({"network": {"allowOut": ["10.0.0.1"] * (limits.NETWORK_ENTRIES + 1)}}, "network.allowOut"),
    ({"network": {"denyOut": ["x" * 300]}}, "network.denyOut.0"),
    ({"mcp": {"blob": "x" * (limits.JSON_BYTES + 1)}}, "mcp"),
], ids=["20k-keys", "long-value", "long-key", "total-bytes", "env-bytes", "env-count", "allow-count",
        "deny-entry", "mcp-size"])
def test_oversized_sandbox_fields_are_refused(server: Server, body: dict, field: str) -> None:
    with _e2b(server) as api:
        before = api.get("/v2/sandboxes").json()
        resp = api.post("/sandboxes", json={"templateID": "base", **body})
        assert resp.status_code == 400, resp.text[:300]
        assert resp.json()["code"] == 400 and field in resp.json()["message"], resp.json()["message"][:300]
        assert len(resp.content) < 4096   # the error does not echo the megabytes back
        assert api.get("/v2/sandboxes").json() == before


def test_oversized_network_update_and_build_fields_are_refused(server: Server) -> None:
    with _e2b(server) as api:
        resp = api.put("/sandboxes/inothere/network", json={"allowOut": ["1.1.1.1"] * 1000})
        assert resp.status_code == 400 and "allowOut" in resp.json()["message"]
        resp = api.post("/v3/templates", json={"name": "big-tags", "tags": [f"t{i}" for i in range(1000)]})
        assert resp.status_code == 400 and "tags" in resp.json()["message"]
        resp = api.post("/templates/tags", json={"target": "base:default", "tags": ["x" * 500]})
        assert resp.status_code == 400 and "tags" in resp.json()["message"]


def test_oversized_prime_fields_are_refused(server: Server) -> None:
    with _prime(server) as api:
        before = api.get("/sandbox").json()
        for body in ({"labels": [f"l{i}" for i in range(20_000)]},
                     {"environment_vars": {f"E{i}": "x" * 30_000 for i in range(5)}},
                     {"secrets": {"S": "x" * (limits.ENV_VALUE + 1)}},
                     {"network_allowlist": ["x" * 300]},
                     {"start_command": {"executable": "sh", "args": ["x"] * 5000}}):
            resp = api.post("/sandbox", json={"name": "big", "docker_image": "base", **body})
            assert resp.status_code == 422, resp.text[:300]
            assert isinstance(resp.json()["detail"], list) and len(resp.content) < 8192
        resp = api.post("/images/build", json={"image_name": "x" * 1000, "image_tag": "v1"})
        assert resp.status_code == 422, resp.text[:300]
        assert api.get("/sandbox").json()["total"] == before["total"]


def test_the_largest_allowed_values_are_stored(server: Server) -> None:
    metadata = {f"k{i:03d}": "v" * 300 for i in range(limits.METADATA_ENTRIES)}   # 30 KB, 100 keys
    with _e2b(server) as api:
        resp = api.post("/sandboxes", json={"templateID": "base", "metadata": metadata, "timeout": 60,
                                            "envVars": {"BIG": "x" * limits.ENV_VALUE}})
        assert resp.status_code == 201, resp.text[:300]
        sandbox_id = resp.json()["sandboxID"]
        try:
            listed = {s["sandboxID"]: s for s in api.get("/v2/sandboxes").json()}
            assert listed[sandbox_id]["metadata"] == metadata
        finally:
            api.delete(f"/sandboxes/{sandbox_id}")
