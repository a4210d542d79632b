"""Per-team quotas (docs/security/names-and-quotas.md): a hostile team cannot take the whole
server — concurrent sandboxes, snapshots, running builds and stored upload bytes are capped per
team with E2B's 429 (the unmodified SDK raises ``RateLimitException``), Prime's façade answers
the same limit in its own shape, and another team is never affected.

Its own server with small limits (set through the server's environment, as an operator would).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from e2b import RateLimitException, Sandbox, Template

from sandlot import ids
from tests.e2e.prime_clients import call
from tests.e2e.server import SANDLOT, Server, sdk_pointed_at

pytestmark = pytest.mark.timeout(600)

LIMIT = 5
UPLOAD_LIMIT = 64 * 1024
MESSAGE = f"you have reached the maximum number of concurrent E2B sandboxes ({LIMIT})"


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("quotas"), api_key=ids.new_api_key(), extra_env={
        "SANDLOT_QUOTA_CONCURRENT_SANDBOXES": str(LIMIT),
        "SANDLOT_QUOTA_SNAPSHOTS": "1",
        "SANDLOT_QUOTA_CONCURRENT_BUILDS": "1",
        "SANDLOT_QUOTA_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "SANDLOT_WARM_POOL_SIZE": "1",   # pooled sandboxes exist and must never count
    })
    srv.start()
    with sdk_pointed_at(srv):
        yield srv
    srv.stop()


@pytest.fixture(scope="module")
def other_key(quota_server: Server) -> str:
    out = subprocess.run([str(SANDLOT), "keys", "create", "--team", "quota-other", "--name", "t"],
                         env=quota_server.env(), check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _post_create(server: Server, key: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/sandboxes", json={"templateID": "base", "timeout": 120},
                      headers={"X-API-Key": key}, timeout=120)


def _kill(server: Server, key: str, sandbox_id: str) -> None:
    httpx.delete(f"{server.url}/sandboxes/{sandbox_id}", headers={"X-API-Key": key}, timeout=60)


def _running(server: Server, key: str) -> list[str]:
    rows = httpx.get(f"{server.url}/v2/sandboxes?state=running", headers={"X-API-Key": key}, timeout=30).json()
    return [r["sandboxID"] for r in rows]


def test_forty_concurrent_creates_admit_exactly_the_limit(quota_server: Server, other_key: str) -> None:
    key = quota_server.api_key
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda _: _post_create(quota_server, key), range(40)))
    made = [a.json()["sandboxID"] for a in answers if a.status_code == 201]
    try:
        refused = [a for a in answers if a.status_code != 201]
        assert len(made) == LIMIT, [a.status_code for a in answers]
        assert len(refused) == 40 - LIMIT
        for answer in refused:   # E2B's body and message; no retry asked of the SDK
            assert answer.status_code == 429 and answer.headers["should-retry"] == "false"
            assert set(answer.json()) == {"code", "message"} and answer.json()["code"] == 429
            assert answer.json()["message"].startswith(MESSAGE)
        assert sorted(_running(quota_server, key)) == sorted(made)   # nothing half-made left behind

        with pytest.raises(RateLimitException, match="maximum number of concurrent E2B sandboxes"):
            Sandbox.create(timeout=60)   # the unmodified SDK's typed exception
        # the Prime façade honours the same quota, in Prime's shape
        prime = httpx.post(f"{quota_server.url}/api/v1/sandbox", headers={"Authorization": f"Bearer {key}"},
                           json={"name": "over", "docker_image": "base"}, timeout=60)
        assert prime.status_code == 429 and prime.json()["detail"].startswith(MESSAGE)

        # another team is not affected by this team's full quota
        theirs = Sandbox.create(timeout=60, api_key=other_key)
        assert theirs.commands.run("echo other").stdout == "other\n"
        theirs.kill()

        # killing one frees exactly one slot
        _kill(quota_server, key, made.pop())
        again = Sandbox.create(timeout=60)
        made.append(again.sandbox_id)
        assert again.commands.run("echo again").stdout == "again\n"
        assert _post_create(quota_server, key).status_code == 429
    finally:
        for sandbox_id in made:
            _kill(quota_server, key, sandbox_id)


def test_operator_override_for_one_team(quota_server: Server, other_key: str) -> None:
    """`sandlot keys quota TEAM --concurrent-sandboxes N` (a column on the team) beats the setting."""
    def quota(*args: str) -> str:
        return subprocess.run([str(SANDLOT), "keys", "quota", "quota-other", *args], env=quota_server.env(),
                              check=True, capture_output=True, text=True).stdout

    assert "team" in quota("--concurrent-sandboxes", "1")
    first = Sandbox.create(timeout=60, api_key=other_key)
    try:
        with pytest.raises(RateLimitException, match=r"concurrent E2B sandboxes \(1\)"):
            Sandbox.create(timeout=60, api_key=other_key)
        mine = Sandbox.create(timeout=60)   # the other team's setting is the server's LIMIT
        mine.kill()
    finally:
        first.kill()
        assert "SANDLOT_QUOTA_CONCURRENT_SANDBOXES" in quota("--reset")


def test_paused_sandboxes_do_not_count_but_resuming_one_does(quota_server: Server) -> None:
    """E2B counts running sandboxes only: pausing frees the slot, resuming needs one."""
    made = [Sandbox.create(timeout=120) for _ in range(LIMIT)]
    try:
        paused = made[0]
        paused.files.write("/home/user/kept.txt", "kept")
        paused.pause()
        extra = Sandbox.create(timeout=120)   # the paused sandbox's slot
        made.append(extra)
        with pytest.raises(RateLimitException):
            Sandbox.connect(paused.sandbox_id, timeout=120)   # resuming would be LIMIT + 1
        extra.kill()
        made.remove(extra)
        resumed = Sandbox.connect(paused.sandbox_id, timeout=120)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        for sbx in made:
            Sandbox.kill(sbx.sandbox_id)


def test_prime_pending_sandboxes_hold_their_slot(quota_server: Server) -> None:
    headers = {"Authorization": f"Bearer {quota_server.api_key}"}
    made: list[str] = []
    try:
        with httpx.Client(base_url=f"{quota_server.url}/api/v1", headers=headers, timeout=60) as client:
            for i in range(LIMIT):
                answer = client.post("/sandbox", json={"name": f"p{i}", "docker_image": "base"})
                assert answer.status_code == 201, answer.text
                made.append(answer.json()["id"])
            # right after the 201s (PENDING or RUNNING alike) the quota is full, for both APIs
            assert client.post("/sandbox", json={"name": "over", "docker_image": "base"}).status_code == 429
            assert _post_create(quota_server, quota_server.api_key).status_code == 429
    finally:
        with httpx.Client(base_url=f"{quota_server.url}/api/v1", headers=headers, timeout=60) as client:
            for sandbox_id in made:
                client.delete(f"/sandbox/{sandbox_id}")
        # a Prime delete answers before a launch still in flight has stopped its sandbox
        deadline = time.monotonic() + 120
        while _running(quota_server, quota_server.api_key) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _running(quota_server, quota_server.api_key) == []


def _create_once_slots_free() -> Sandbox:
    """A create, retried while an earlier test's deleted sandboxes still hold their slots
    (a Prime delete answers before a launch in flight has stopped its sandbox)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return Sandbox.create(timeout=120)
        except RateLimitException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_snapshot_quota(quota_server: Server) -> None:
    sbx = _create_once_slots_free()
    try:
        first = sbx.create_snapshot()
        with pytest.raises(RateLimitException, match="maximum number of snapshots"):
            sbx.create_snapshot()
        assert sbx.commands.run("echo alive").stdout == "alive\n"   # the refused snapshot cost nothing
        Sandbox.delete_snapshot(first.snapshot_id)
        second = sbx.create_snapshot()
        Sandbox.delete_snapshot(second.snapshot_id)
    finally:
        sbx.kill()


def _tar(size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = uuid.uuid4().bytes * (size // 16)
        info = tarfile.TarInfo("blob")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_upload_bytes_quota(quota_server: Server, other_key: str) -> None:
    def upload(key: str, payload: bytes) -> httpx.Response:
        headers = {"X-API-Key": key}
        created = httpx.post(f"{quota_server.url}/v3/templates", json={"name": f"up-{uuid.uuid4().hex[:8]}"},
                             headers=headers).json()
        files_hash = uuid.uuid4().hex * 2
        link = httpx.get(f"{quota_server.url}/templates/{created['templateID']}/files/{files_hash}",
                         headers=headers).json()
        return httpx.put(link["url"], content=payload, timeout=60)

    too_big = upload(quota_server.api_key, _tar(UPLOAD_LIMIT + 4096))
    assert too_big.status_code == 429 and set(too_big.json()) == {"code", "message"}
    assert "bytes of uploaded build files" in too_big.json()["message"]
    assert upload(quota_server.api_key, _tar(UPLOAD_LIMIT // 2)).status_code == 201
    assert upload(quota_server.api_key, _tar(UPLOAD_LIMIT // 2 + 4096)).status_code == 429   # the sum counts
    assert upload(other_key, _tar(UPLOAD_LIMIT // 2)).status_code == 201   # per team

    # Prime build contexts count against the same quota, answered in Prime's shape
    headers = {"Authorization": f"Bearer {quota_server.api_key}"}
    with httpx.Client(base_url=f"{quota_server.url}/api/v1", headers=headers, timeout=60) as client:
        build = client.post("/images/build", json={"image_name": "ctx", "image_tag": "v1"}).json()
        refused = httpx.put(build["upload_url"], content=_tar(UPLOAD_LIMIT), timeout=60)
        assert refused.status_code == 429 and "bytes of uploaded build files" in refused.json()["detail"]


@pytest.mark.slow
def test_concurrent_build_quota(quota_server: Server, other_key: str) -> None:
    name = f"slow-{uuid.uuid4().hex[:8]}"
    slow = Template().from_template("base").run_cmd(f"sleep 20; echo {name}")   # unique: never a cached layer
    info = Template.build_in_background(slow, name)
    headers = {"X-API-Key": quota_server.api_key}
    second = httpx.post(f"{quota_server.url}/v3/templates", json={"name": f"{name}-2"}, headers=headers).json()
    start = f"{quota_server.url}/v2/templates/{second['templateID']}/builds/{second['buildID']}"
    steps = {"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["true"], "force": False}]}
    refused = httpx.post(start, json=steps, headers=headers)
    assert refused.status_code == 429 and refused.headers["should-retry"] == "false"
    assert "maximum number of concurrent template builds (1)" in refused.json()["message"]
    # Prime image builds count too (a source-image build starts at once)
    prime = httpx.post(f"{quota_server.url}/api/v1/images/build", headers={"Authorization": f"Bearer {quota_server.api_key}"},
                       json={"source_image": "base", "image_name": "again", "image_tag": "v1"}, timeout=60)
    assert prime.status_code == 429 and "concurrent template builds" in prime.json()["detail"]
    # another team builds meanwhile
    Template.build(Template().from_template("base").run_cmd("true"), f"{name}-other", api_key=other_key)
    # the slot frees when the first build finishes; the refused build can then start as it was
    status = Template.get_build_status(info, logs_offset=0)
    while status.status.value in ("building", "waiting"):
        time.sleep(1)
        status = Template.get_build_status(info, logs_offset=0)
    assert status.status.value == "ready"
    assert httpx.post(start, json=steps, headers=headers).status_code == 202


@pytest.mark.slow
def test_unmodified_prime_sdk_reports_the_quota(quota_server: Server, tmp_path: Path) -> None:
    """The Prime SDK retries a 429 (after 10 s and 30 s) and then raises with the server's detail."""
    made = [Sandbox.create(timeout=120) for _ in range(LIMIT)]
    try:
        home = tmp_path / "home"
        home.mkdir()
        out = call(quota_server, home, "create", {"name": "over", "docker_image": "base"}, timeout=180)
        assert out["error"] == "APIError" and out["message"].startswith(f"HTTP 429: {MESSAGE}"), out
    finally:
        for sbx in made:
            sbx.kill()
