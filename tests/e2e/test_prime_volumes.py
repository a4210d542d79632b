"""Prime volumes (issue 15) with the unmodified prime-sandboxes SDK and prime CLI: CRUD per team,
private copies of the head, publish (a checkpoint the client waits for), stale-head 409,
read-only attachments, delete while attached (409) and after, no checkpoints of a sandbox
with volumes (400)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.prime_clients import call, cli, driver
from tests.e2e.server import SANDLOT, Server


@pytest.fixture
def other_key(server: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", "prime-vol-other", "--name", "t"],
                         env=server.env(), check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def test_sdk_volumes_copy_publish_conflict_and_teams(server: Server, tmp_path: Path, other_key: str) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"vol-{tag}"
    out = driver(server, tmp_path, "sdk_volumes", tag, other_key, timeout=600)

    created = out["created"]
    assert created["name"] == name and created["head_checkpoint_id"] is None and created["occupied_bytes"] == 0
    assert "HTTP 409" in out["duplicate"], out["duplicate"]
    assert "HTTP 4" in out["bad_name"], out["bad_name"]
    assert name in out["listed"] and out["listed_total"] >= 1

    published = out["published"]
    assert published["state"] == "DURABLE" and published["occupied_bytes"] > 0
    assert out["head_after_publish"] == published["id"]
    assert out["republish"] == "DURABLE"
    assert "HTTP 400" in out["checkpoint_attached"], out["checkpoint_attached"]

    assert out["second_sees"] == "one\n"
    assert out["third_private"] == "three\n"       # a private copy: not the second sandbox's write
    assert out["second_publish"] == "DURABLE"
    assert "HTTP 409" in out["third_publish"], out["third_publish"]
    assert "HTTP 404" in out["unattached_publish"], out["unattached_publish"]

    assert out["reader_sees"] == "two\n"
    assert out["reader_write"] != 0
    assert "HTTP 400" in out["reader_publish"], out["reader_publish"]

    assert name not in out["other_listed"]
    for key in ("other_get", "other_publish", "other_delete"):
        assert "HTTP 404" in out[key], (key, out[key])
    assert out["other_same_name"] == name

    assert out["async"]["head"] is not None and name in out["async"]["names"]
    assert "HTTP 409" in out["delete_attached"], out["delete_attached"]
    assert out["later_sees"] == "two\n"
    assert "HTTP 404" in out["deleted_get"], out["deleted_get"]


def test_cli_volumes_create_list_get_publish_delete(server: Server, tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    made = cli(server, tmp_path, "sandbox", "volumes", "create", name, "--plain")
    assert made.returncode == 0, made.stdout + made.stderr
    listed = cli(server, tmp_path, "sandbox", "volumes", "list", "--plain")
    assert listed.returncode == 0 and name in listed.stdout, listed.stdout + listed.stderr

    box = call(server, tmp_path, "create_and_wait",
               {"name": "cli-vol", "docker_image": "base", "volumes": [{"name": name, "mount_path": "/mnt/v"}]})
    try:
        wrote = call(server, tmp_path, "exec", box["id"], "echo cli > /mnt/v/c.txt")
        assert wrote["exit_code"] == 0, wrote
        published = cli(server, tmp_path, "sandbox", "volumes", "publish", name, "--sandbox", box["id"], "--plain")
        assert published.returncode == 0, published.stdout + published.stderr
    finally:
        call(server, tmp_path, "delete", box["id"])
    got = cli(server, tmp_path, "sandbox", "volumes", "get", name, "--plain")
    assert got.returncode == 0 and name in got.stdout, got.stdout + got.stderr
    head = call(server, tmp_path, "create_and_wait",
                {"name": "cli-vol2", "docker_image": "base", "volumes": [{"name": name, "mount_path": "/mnt/v"}]})
    try:
        assert call(server, tmp_path, "exec", head["id"], "cat /mnt/v/c.txt")["stdout"] == "cli\n"
    finally:
        call(server, tmp_path, "delete", head["id"])
    gone = cli(server, tmp_path, "sandbox", "volumes", "delete", name, "--yes", "--plain")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    again = cli(server, tmp_path, "sandbox", "volumes", "get", name, "--plain")
    assert again.returncode != 0
