"""Prime Intellect façade: the unmodified prime-sandboxes SDK against a real server and real sandboxes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import Sandbox

from tests.e2e.prime_clients import call, driver
from tests.e2e.server import Server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30)


def wait_status(server: Server, sandbox_id: str, wanted: set[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with api(server) as client:
        while True:
            body = client.get(f"/sandbox/{sandbox_id}").json()
            if body["status"] in wanted or time.monotonic() > deadline:
                return body
            time.sleep(0.5)


def e2b_ids() -> set[str]:
    return {s.sandbox_id for s in Sandbox.list().next_items()}


@pytest.fixture(scope="module", autouse=True)
def short_lived(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sandbox with ``timeout_minutes=1``, made as the module starts: its minute runs out while
    the other tests run, and ``test_timeout_minutes_ends_in_timeout`` checks how it ended."""
    return call(server, tmp_path_factory.mktemp("prime-short"), "create_and_wait",
                {"name": "short", "docker_image": "base", "timeout_minutes": 1})


def test_sdk_lifecycle_and_e2b_view(server: Server, home: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    out = driver(server, home, "sdk_lifecycle", tag)
    created, running = out["created"], out["running"]
    assert created["status"] in ("PENDING", "PROVISIONING", "RUNNING")
    assert running["status"] == "RUNNING" and running["labels"] == ["prime-e2e", tag]
    assert running["docker_image"] == "base" and running["environment_vars"] == {"GREETING": "hi"}
    assert running["secrets"] is None  # secrets reach the sandbox but are never echoed
    assert out["exec"] == {"stdout": "hi s3cret\nroot\n", "stderr": "oops\n", "exit_code": 3}
    assert out["exec_user"]["stdout"] == "user\n/tmp\n"
    assert out["exec_env"]["stdout"] == "1-2\n"
    assert 1800 <= out["disk_mb"] <= 2048   # disk_size_gb=2 is the sandbox's disk
    assert out["upload"]["success"] and out["upload"]["path"] == "/tmp/data/in.bin" and out["upload"]["size"] == 10240
    assert out["download_equal"] is True
    assert out["read"]["content"] == "line1\nline2\nline3\n"
    assert out["read_tail"] == {"content": "line3\n", "size": 6, "total_size": 18, "offset": 12, "truncated": True}
    assert out["read_window"]["content"] == "line2" and out["read_window"]["offset"] == 6
    assert out["read_missing"] == "SandboxFileNotFoundError"
    assert out["job_first_completed"] is False
    assert out["job"]["completed"] and out["job"]["exit_code"] == 7
    assert out["job"]["stdout"] == "job-out\n" and out["job"]["stderr"] == "job-err\n"

    # One engine, two façades: the E2B SDK sees and drives the same sandbox.
    sandbox_id = out["id"]
    assert sandbox_id in e2b_ids()
    sbx = Sandbox.connect(sandbox_id)
    assert sbx.commands.run("cat /tmp/text.txt").stdout == "line1\nline2\nline3\n"

    assert call(server, home, "delete", sandbox_id)["success"] is True
    assert sandbox_id not in e2b_ids()
    gone = call(server, home, "get", sandbox_id)
    assert gone["status"] == "TERMINATED" and gone["terminated_at"]


def test_e2b_sandbox_is_visible_and_usable_via_prime(server: Server, home: Path) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        got = call(server, home, "get", sbx.sandbox_id)
        assert got["status"] == "RUNNING" and got["docker_image"] == "base"
        listed = call(server, home, "list", {"status": "RUNNING", "per_page": 1000})
        assert sbx.sandbox_id in {s["id"] for s in listed["sandboxes"]}
        sbx.files.write("/tmp/from-e2b.txt", "made by e2b")
        result = call(server, home, "exec", sbx.sandbox_id, "cat /tmp/from-e2b.txt")
        assert result == {"stdout": "made by e2b", "stderr": "", "exit_code": 0}
        assert call(server, home, "delete", sbx.sandbox_id)["success"] is True
        assert sbx.sandbox_id not in e2b_ids()
    finally:
        sbx.kill()


def test_labels_list_and_bulk_delete(server: Server, home: Path) -> None:
    tag = "bulk-" + uuid.uuid4().hex[:6]
    ids = [call(server, home, "create", {"name": f"b{i}", "docker_image": "base", "labels": [tag, f"n{i}"]})["id"] for i in range(3)]
    for sandbox_id in ids:
        assert wait_status(server, sandbox_id, {"RUNNING"}, 60)["status"] == "RUNNING"
    listed = call(server, home, "list", {"labels": [tag]})
    assert {s["id"] for s in listed["sandboxes"]} == set(ids) and listed["total"] == 3
    assert [s["id"] for s in call(server, home, "list", {"labels": [tag, "n1"]})["sandboxes"]] == [ids[1]]
    page = call(server, home, "list", {"labels": [tag], "per_page": 2})
    assert len(page["sandboxes"]) == 2 and page["has_next"] is True

    by_id = call(server, home, "bulk_delete", {"sandbox_ids": [ids[0], "inosuchsandbox0000000"]})
    assert by_id["succeeded"] == [ids[0]] and list(by_id["failed"][0]) == ["inosuchsandbox0000000"]
    by_label = call(server, home, "bulk_delete", {"labels": [tag]})
    assert sorted(by_label["succeeded"]) == sorted(ids[1:])
    active = call(server, home, "list", {"labels": [tag], "exclude_terminated": True})
    assert active["total"] == 0
    assert {s["status"] for s in call(server, home, "list", {"labels": [tag]})["sandboxes"]} == {"TERMINATED"}
    assert not set(ids) & e2b_ids()


def test_live_process_stdin_and_signal(server: Server, home: Path) -> None:
    out = driver(server, home, "sdk_process")
    assert out["pid_positive"] is True
    assert out["stdout"] == "got:first\nalso:second\n"
    assert out["returncode"] != 0


def test_rest_shapes_and_gateway_errors(server: Server) -> None:
    with api(server) as client:
        bad = client.post("/sandbox", json={"docker_image": "base"})
        assert bad.status_code == 422 and "detail" in bad.json()
        assert client.get("/sandbox/inosuchsandbox0000000").json() == {"detail": "Sandbox inosuchsandbox0000000 not found"}
        request = {"name": "raw", "docker_image": "base", "idempotency_key": "k-" + uuid.uuid4().hex}
        created = client.post("/sandbox", json=request)
        assert created.status_code == 201
        body = created.json()
        for key in ("id", "name", "dockerImage", "cpuCores", "memoryGB", "diskSizeGB", "diskMountPath", "gpuCount",
                    "status", "timeoutMinutes", "createdAt", "updatedAt", "labels", "gatewayAuth"):
            assert key in body, key
        sandbox_id, auth = body["id"], body["gatewayAuth"]
        assert set(auth) == {"token", "gateway_url", "user_ns", "job_id", "expires_at"} and auth["job_id"] == sandbox_id
        assert client.post("/sandbox", json=request).json()["id"] == sandbox_id  # idempotency_key dedupes retries
        assert wait_status(server, sandbox_id, {"RUNNING"}, 60)["status"] == "RUNNING"

        batch = client.post("/sandbox/status:batchGet", json={"sandbox_ids": [sandbox_id, "inope"]}).json()
        assert batch["statuses"] == [{"sandbox_id": sandbox_id, "status": "RUNNING", "error_type": None,
                                      "error_message": None, "pending_image_build_id": None}]
        assert batch["errors"][0]["sandbox_id"] == "inope" and batch["errors"][0]["code"] == "NOT_FOUND"
        assert client.get(f"/sandbox/{sandbox_id}/error-context").json() == {"status": "RUNNING", "errorType": None, "errorMessage": None}
        assert client.get(f"/sandbox/{sandbox_id}/logs").json() == {"logs": ""}

        fresh = client.post(f"/sandbox/{sandbox_id}/auth").json()
        base = f"{fresh['gateway_url']}/{fresh['user_ns']}/{fresh['job_id']}"
        good = {"Authorization": f"Bearer {fresh['token']}"}
        gw = httpx.Client(timeout=30)
        assert gw.get(f"{base}/read-file", params={"path": "/etc/hostname"}, headers=good).status_code == 200
        assert gw.get(f"{base}/read-file", params={"path": "/etc/hostname"}, headers={"Authorization": "Bearer x.y"}).status_code == 401
        tampered = fresh["token"][:-2] + ("AA" if not fresh["token"].endswith("AA") else "BB")
        assert gw.get(f"{base}/read-file", params={"path": "/x"}, headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
        other = f"{fresh['gateway_url']}/{fresh['user_ns']}/inosuchsandbox0000000"
        assert gw.get(f"{other}/read-file", params={"path": "/x"}, headers=good).status_code == 401  # token is per sandbox
        listed = gw.post(f"{base}/command_session.CommandSession/List", headers={**good, "Content-Type": "application/proto"}, content=b"")
        assert listed.status_code == 200
        unauth = gw.post(f"{base}/command_session.CommandSession/List", headers={"Content-Type": "application/proto"}, content=b"")
        assert unauth.status_code == 401 and unauth.json()["code"] == "unauthenticated"
        upload = gw.post(f"{base}/upload", params={"path": "/tmp/big"}, headers=good,
                         files={"file": ("big", b"x" * (17 * 1024 * 1024))})
        assert upload.status_code == 200 and upload.json()["size"] == 17 * 1024 * 1024
        too_big = gw.get(f"{base}/read-file", params={"path": "/tmp/big"}, headers=good)
        assert too_big.status_code == 413
        tail = gw.get(f"{base}/read-file", params={"path": "/tmp/big", "offset": -4}, headers=good).json()
        assert tail["content"] == "xxxx" and tail["total_size"] == 17 * 1024 * 1024 and tail["truncated"] is True

        assert client.delete(f"/sandbox/{sandbox_id}").json()["success"] is True
        gone = gw.get(f"{base}/read-file", params={"path": "/etc/hostname"}, headers=good)
        assert gone.status_code == 410 and gone.json()["error"] == "sandbox_terminated"
        assert client.post(f"/sandbox/{sandbox_id}/auth").status_code == 410
        gw.close()


def test_unknown_registry_image_fails_with_image_pull_failed(server: Server) -> None:
    with api(server) as client:
        created = client.post("/sandbox", json={"name": "pull", "docker_image": "127.0.0.1:1/nothing:latest"}).json()
        assert created["status"] == "PENDING" and created["pendingImageBuildId"]
        final = wait_status(server, created["id"], {"ERROR"}, 60)
    assert final["status"] == "ERROR" and final["errorType"] == "IMAGE_PULL_FAILED"
    assert "127.0.0.1:1/nothing:latest" in final["errorMessage"]


@pytest.mark.slow
def test_timeout_minutes_ends_in_timeout(server: Server, home: Path, short_lived: dict[str, Any]) -> None:
    sandbox = short_lived
    assert sandbox["status"] == "RUNNING" and sandbox["timeout_minutes"] == 1
    final = wait_status(server, sandbox["id"], {"TIMEOUT", "TERMINATED"}, 90)
    assert final["status"] == "TIMEOUT" and final["errorType"] == "TIMEOUT"
    assert sandbox["id"] not in e2b_ids()
    failed = call(server, home, "exec", sandbox["id"], "true")
    assert failed["error"] in ("SandboxTimeoutError", "SandboxNotRunningError", "APIError"), failed


def test_oom_killed_sandbox_reports_error_type(server: Server, home: Path) -> None:
    created = call(server, home, "create", {"name": "oom", "docker_image": "base"})
    assert wait_status(server, created["id"], {"RUNNING"}, 60)["status"] == "RUNNING"
    # one engine: drive the same sandbox with the E2B SDK to exhaust its memory with envd first in line
    Sandbox.connect(created["id"]).commands.run(
        "echo 0 > /proc/self/oom_score_adj || { read a < /proc/1/oom_score_adj; echo $a > /proc/self/oom_score_adj; }; "  # as low as allowed
        "echo 1000 > /proc/1/oom_score_adj; python3 -c 'b = bytearray(2 * 1024 ** 3)'", user="root", background=True
    )
    ended = wait_status(server, created["id"], {"ERROR", "TERMINATED"}, 45)
    assert ended["status"] == "ERROR" and ended["errorType"] == "OOM_KILLED", ended
