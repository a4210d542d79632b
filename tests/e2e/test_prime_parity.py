"""Prime parity (issue 15) with the unmodified prime-sandboxes SDK and prime CLI against real sandboxes:
checkpoints and sandboxes restored from them, egress policies, background-job batch status,
exitCode. Volumes: test_prime_volumes.py."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tests.e2e.prime_clients import call, cli, driver
from tests.e2e.server import Server


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def test_sdk_checkpoints_egress_jobs_exit_code(server: Server, home: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    out = driver(server, home, "sdk_parity", tag, timeout=420)

    # exitCode: the start command's, once it ended (the sandbox keeps running, as on Prime's VMs)
    assert out["exit_code"] == 5 and f"started-{tag}" in out["logs"]

    # background jobs through the batch endpoint (the SDK remembers it is supported)
    assert out["jobs_batched"] is True
    fast, slow = out["jobs"]
    assert fast["completed"] is True and fast["exit_code"] == 4
    assert slow["completed"] is False and slow["exit_code"] is None
    assert out["job_output"] == "out\n"

    # checkpoints: DURABLE at once, listed, batch lookups with per-id errors
    cp = out["checkpoint"]
    assert cp["state"] == "DURABLE" and cp["docker_image"] == "base" and cp["depth"] == 0 and cp["parent_id"] is None
    assert out["listed"] == [cp["id"]]
    assert out["checkpoint_batched"] is True
    assert out["batch"]["found"] == [cp["id"]]
    assert out["batch"]["errors"] == [{"checkpoint_id": "nosuchcheckpoint", "code": "NOT_FOUND",
                                       "message": "Checkpoint nosuchcheckpoint not found"}]

    # the restored sandbox has the disk as it was at the checkpoint, and its start command ran again
    restored = out["restored"]
    assert restored["status"] == "RUNNING" and restored["labels"] == [tag] and restored["docker_image"] == "base"
    assert restored["environment_vars"] == {"PARITY": tag}
    assert out["restored_files"] == "before\nno-later\n"
    assert out["restored_exit_code"] == 5
    assert out["child"] == {"parent_id": cp["id"], "depth": 1}

    # egress policy: read, replaced, read back; '*' is an empty denylist
    assert out["policy_before"]["policy"] == {"allowlist": None, "denylist": None}
    assert out["policy_denied"]["policy"] == {"allowlist": None, "denylist": ["10.255.255.1"]}
    assert out["policy_denied"]["applied"] is True and out["policy_denied"]["generation"] == 2
    assert out["policy_read"] == out["policy_denied"]
    assert out["policy_all"] == {"allowlist": None, "denylist": []}
    assert out["policy_bad"].startswith("APIError: HTTP 422")

    assert out["async"]["checkpoint"] == cp["id"] and out["async"]["listed"] == [cp["id"]]
    assert out["async"]["policy"] == {"allowlist": None, "denylist": []}

    # volumes (test_prime_volumes.py) cannot be mounted into a sandbox restored from a checkpoint
    assert "HTTP 400" in out["volume_on_restore"] and "restored from a checkpoint" in out["volume_on_restore"]

    # deleting checkpoints leaves the sandbox restored from them running
    assert "HTTP 404" in out["deleted_get"]
    assert len(out["delete_all"]["deleted"]) == 1 and out["delete_all"]["errors"] == []
    assert out["restored_still"] == "RUNNING"


def _json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def test_cli_checkpoint_fork_and_egress(server: Server, home: Path) -> None:
    source = call(server, home, "create_and_wait", {"name": "cli-parity", "docker_image": "base"})
    sid = source["id"]
    made = [sid]
    try:
        call(server, home, "exec", sid, "echo forked-content > /root/f")
        created = cli(server, home, "sandbox", "checkpoint", "create", sid, "-o", "json")
        assert created.returncode == 0, created.stdout + created.stderr
        checkpoint_id = _json(created.stdout)["id"]
        listed = cli(server, home, "sandbox", "checkpoint", "list", sid, "-o", "json")
        assert [c["id"] for c in _json(listed.stdout)["checkpoints"]] == [checkpoint_id]

        forked = cli(server, home, "sandbox", "fork", sid, "--yes")
        assert forked.returncode == 0, forked.stdout + forked.stderr
        match = re.search(r"forked into sandbox (\S+)", forked.stdout)
        assert match, forked.stdout
        fork_id = match.group(1)
        made.append(fork_id)
        call(server, home, "wait", fork_id)
        assert call(server, home, "exec", fork_id, "cat /root/f")["stdout"] == "forked-content\n"

        egress = cli(server, home, "sandbox", "network", "egress", sid, "--deny", "10.255.255.2")
        assert egress.returncode == 0, egress.stdout + egress.stderr
        assert call(server, home, "get", sid)["network_denylist"] == ["10.255.255.2"]

        deleted = cli(server, home, "sandbox", "checkpoint", "delete", "--sandbox", sid, "--yes", "-o", "json")
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert len(_json(deleted.stdout)["deleted"]) == 2   # the one above and the fork's
    finally:
        for sandbox_id in made:
            call(server, home, "delete", sandbox_id)


def test_cli_publish_unpublish_and_unsupported_rename(server: Server, home: Path, tmp_path: Path) -> None:
    tag = "v" + uuid.uuid4().hex[:6]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM base\nENV PARITY=1\n")
    pushed = cli(server, home, "images", "push", f"parity:{tag}", "--context", str(context))
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr

    def visibility() -> str:
        listed = cli(server, home, "images", "list", "--output", "json")
        rows = [r for r in _json(listed.stdout)["data"] if r["imageName"] == "parity" and r["imageTag"] == tag]
        assert len(rows) == 1, listed.stdout
        return str(rows[0]["visibility"])

    published = cli(server, home, "images", "publish", f"parity:{tag}")
    assert published.returncode == 0, published.stdout + published.stderr
    assert visibility() == "PUBLIC"
    unpublished = cli(server, home, "images", "unpublish", f"parity:{tag}")
    assert unpublished.returncode == 0, unpublished.stdout + unpublished.stderr
    assert visibility() == "PRIVATE"
    renamed = cli(server, home, "images", "update", f"parity:{tag}", "--name", "other")
    assert renamed.returncode != 0 and "not supported" in renamed.stdout + renamed.stderr, renamed.stdout
    missing = cli(server, home, "images", "publish", f"nosuch:{tag}")
    assert missing.returncode != 0 and "not found" in (missing.stdout + missing.stderr).lower(), missing.stdout
