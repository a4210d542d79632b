"""Prime image builds: ``prime images push`` against Sandlot's template builder, then sandboxes from them."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.prime_clients import call, cli
from tests.e2e.server import Server

@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=60)


def wait_build(server: Server, build_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with api(server) as client:
        while True:
            body = client.get(f"/images/build/{build_id}").json()
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() > deadline:
                return body
            time.sleep(1)


def listed(server: Server, home: Path, tag: str) -> dict[str, Any]:
    result = cli(server, home, "images", "list", "--output", "json")
    assert result.returncode == 0, result.stderr + result.stdout
    rows = [r for r in json.loads(result.stdout)["data"] if r["imageTag"] == tag]
    assert rows, result.stdout
    return rows[0]


def push(server: Server, home: Path, context: Path, ref: str) -> str:
    result = cli(server, home, "images", "push", ref, "--context", str(context))
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("Build ID:"))
    return line.split(":", 1)[1].strip()


def context_tar(dockerfile: str, files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {".__prime_dockerfile__": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.slow
def test_cli_push_list_and_run_sandbox_from_image(server: Server, home: Path, tmp_path: Path) -> None:
    tag = "v" + uuid.uuid4().hex[:6]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM base\n"
        "ARG GREETING=hello\n"
        "ENV APP_MODE=prod\n"
        "WORKDIR /app\n"
        "RUN printf '#!/bin/sh\\necho \"app started in $APP_MODE\"\\nexec sleep 1000\\n' > /app/start.sh \\\n"
        "    && chmod +x /app/start.sh && echo \"$GREETING from the build\" > /app/built.txt\n"
        "LABEL org.example=ignored\n"
        'CMD ["/app/start.sh"]\n'
    )
    build_id = push(server, home, context, f"webapp:{tag}")
    assert wait_build(server, build_id)["status"] == "COMPLETED", wait_build(server, build_id)
    row = listed(server, home, tag)
    assert row["status"] == "COMPLETED" and row["artifactType"] == "VM_SANDBOX" and row["imageName"] == "webapp"

    sandbox = call(server, home, "create_and_wait", {"name": "from-image", "docker_image": row["fullImagePath"]})
    assert sandbox["status"] == "RUNNING" and sandbox["start_command"] == {"executable": "/app/start.sh", "args": []}
    try:
        result = call(server, home, "exec", sandbox["id"], "pwd; cat /app/built.txt; echo $APP_MODE")
        assert result == {"stdout": "/app\nhello from the build\nprod\n", "stderr": "", "exit_code": 0}
        deadline = time.monotonic() + 20
        while "app started in prod" not in call(server, home, "logs", sandbox["id"])["logs"]:
            assert time.monotonic() < deadline, "the image's CMD did not run"
            time.sleep(0.5)
    finally:
        call(server, home, "delete", sandbox["id"])


@pytest.mark.slow
def test_cli_push_copies_the_context(server: Server, home: Path, tmp_path: Path) -> None:
    tag = "c" + uuid.uuid4().hex[:6]
    context = tmp_path / "ctx"
    (context / "src").mkdir(parents=True)
    (context / "src" / "hello.txt").write_text("copied from the context\n")
    (context / "Dockerfile").write_text("FROM base\nCOPY src/hello.txt /opt/hello.txt\nRUN cat /opt/hello.txt\n")
    build = wait_build(server, push(server, home, context, f"copier:{tag}"))
    assert build["status"] == "COMPLETED", build["errorMessage"]
    sandbox = call(server, home, "create_and_wait", {"name": "copier", "docker_image": build["fullImagePath"]})
    try:
        assert call(server, home, "exec", sandbox["id"], "cat /opt/hello.txt")["stdout"] == "copied from the context\n"
    finally:
        call(server, home, "delete", sandbox["id"])


def test_failing_dockerfile_reports_failed_with_reason(server: Server, home: Path, tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base\nRUN echo about to fail && exit 42\n")
    build = wait_build(server, push(server, home, context, "broken:v1"))
    assert build["status"] == "FAILED"
    assert "exit code 42" in build["errorMessage"] and build["artifacts"][0]["errorMessage"] == build["errorMessage"]
    assert listed(server, home, "v1")["status"] in ("FAILED", "COMPLETED")

    (context / "Dockerfile").write_text("FROM base\nRUN true\nHEALTHCHECK CMD true\n")
    unsupported = wait_build(server, push(server, home, context, "broken:v2"))
    assert unsupported["status"] == "FAILED"
    assert "HEALTHCHECK" in unsupported["errorMessage"] and "line 3" in unsupported["errorMessage"]


def test_build_api_state_machine(server: Server) -> None:
    with api(server) as client:
        init = client.post("/images/build", json={"image_name": "states", "image_tag": "t1",
                                                  "dockerfile_path": ".__prime_dockerfile__", "platform": "linux/amd64"})
        assert init.status_code == 201
        body = init.json()
        assert {"build_id", "upload_url", "expires_in", "fullImagePath"} <= set(body)
        build_id = body["build_id"]
        early = client.post(f"/images/build/{build_id}/start", json={"context_uploaded": True})
        assert early.status_code == 409 and "upload" in early.json()["detail"]
        forged = httpx.put(body["upload_url"].replace("token=", "token=x"), content=b"nope")
        assert forged.status_code == 403
        upload = httpx.put(body["upload_url"], content=context_tar("FROM base\nENV STATE=done\n"),
                           headers={"Content-Type": "application/octet-stream"})
        assert upload.status_code == 200
        started = client.post(f"/images/build/{build_id}/start", json={"context_uploaded": True}).json()
        assert started["id"] == build_id and started["status"] in ("BUILDING", "COMPLETED")
        assert set(started) >= {"id", "imageName", "imageTag", "status", "createdAt", "startedAt", "completedAt", "artifacts", "errorMessage"}
        assert started["artifacts"][0]["artifactType"] == "VM_SANDBOX"
        again = client.post(f"/images/build/{build_id}/start", json={"context_uploaded": True})
        assert again.status_code == 200 and again.json()["id"] == build_id  # idempotent
        assert wait_build(server, build_id)["status"] == "COMPLETED"
        assert build_id in {b["id"] for b in client.get("/images/builds").json()["data"]}
        assert any(r["imageName"] == "states" for r in client.get("/images").json()["data"])
        assert client.put(f"/images/build/{build_id}/context", params={"token": body["upload_url"].split("token=")[1]},
                          content=b"late").status_code == 409
        assert client.delete("/images/states/t1").json()["success"] is True
        assert not any(r["imageName"] == "states" for r in client.get("/images").json()["data"])
        assert client.delete("/images/states/t1").status_code == 404
        assert client.get("/images/build/b_nosuchbuild").status_code == 404
