"""Templates with a start command restore from a post-ready memory snapshot (E2B-style).

The start command below spends START_DELAY_S building its in-memory state before it
serves it, and writes a marker file when it starts. A sandbox created from the
template answers right away, with the snapshot's state: the same boot id and pid as
at build time, so the start command did not run again.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template, wait_for_port

from sandlot import ids
from tests.e2e.server import data_dir as default_data_dir
from tests.e2e.server import data_dir, Server, unique_instance, unique_subnet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

START_DELAY_S = 6.0
ENVD_PORT = 49983

APP = """
import http.server, os, time, uuid
time.sleep(float(os.environ.get("START_DELAY_S", "0")))  # expensive start-up: paid once, at build time
STATE = {"boot": uuid.uuid4().hex, "pid": os.getpid(), "hits": 0}
with open("/tmp/boot", "w") as f:
    f.write(STATE["boot"])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        STATE["hits"] += 1
        body = f"{STATE['boot']} {STATE['pid']} {STATE['hits']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


def slow_start_template(delay_s: float) -> Template:
    encoded = base64.b64encode(APP.encode()).decode()
    return (
        Template().from_template("base")
        .run_cmd(f"echo {encoded} | base64 -d > /home/user/app.py")
        .set_envs({"START_DELAY_S": str(delay_s)})
        .set_start_cmd("python3 /home/user/app.py", wait_for_port(8000))
    )


def snapshots_dir(server: Server) -> Path:
    data_dir = Path(server.env().get("SANDLOT_DATA_DIR") or default_data_dir())
    return data_dir / "templates" / "snapshots" / server.instance


def served(server: Server, sbx: Sandbox) -> tuple[str, int, int]:
    """(boot id, pid, hit number) from the start command's server, through the front door."""
    response = httpx.get(f"{server.url}/", headers={"Host": sbx.get_host(8000)}, timeout=10)
    assert response.status_code == 200, response.text
    boot, pid, hits = response.text.split()
    return boot, int(pid), int(hits)


def envd_get(server: Server, sbx: Sandbox, path: str, token: str | None) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if token is not None:
        headers["X-Access-Token"] = token
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=10)


def created_from(server: Server, sbx: Sandbox) -> str:
    """``warm`` (pool), ``restored`` (snapshot, on the create path) or ``booted``, from the sandbox's event log."""
    entries = httpx.get(f"{server.url}/sandboxes/{sbx.sandbox_id}/logs", headers={"X-API-Key": server.api_key},
                        timeout=10).json()["logEntries"]
    fields = next(e["fields"] for e in entries if e["message"] == "sandbox created")
    return "warm" if fields["warm"] == "True" else "restored" if fields["restored"] == "True" else "booted"


def sandbox_ip(sbx: Sandbox) -> str:
    return sbx.commands.run("ip -4 -o addr show scope global | awk '{print $4}'").stdout.strip()


def build(name: str, delay_s: float = START_DELAY_S, **opts) -> tuple[object, str]:
    messages: list[str] = []
    info = Template.build(slow_start_template(delay_s), name, on_build_logs=lambda e: messages.append(e.message),
                          **opts)
    return info, "\n".join(messages)


def test_sandboxes_restore_the_post_ready_state(server: Server) -> None:
    name = f"ready-{uuid.uuid4().hex[:8]}"
    info, log = build(name)
    assert "Saved post-ready snapshot (" in log, log
    snapshot = snapshots_dir(server) / info.build_id
    assert (snapshot / "image").is_dir()
    template_layers = json.loads((snapshot / "snapshot.json").read_text())["layers"]

    sandboxes: list[Sandbox] = []
    try:
        # a new build has no warm sandboxes yet: this create restores the snapshot
        t0 = time.monotonic()
        first = Sandbox.create(name, timeout=120, envs={"WHO": "first"})
        elapsed = time.monotonic() - t0
        sandboxes.append(first)
        assert elapsed < START_DELAY_S / 2, elapsed
        assert created_from(server, first) == "restored"
        boot, pid, hits = served(server, first)  # already serving, state from build time
        assert hits == 1
        assert first.files.read("/tmp/boot") == boot  # written by the start command at build time
        assert first.commands.run("echo $WHO").stdout.strip() == "first"
        disk_mb = httpx.get(f"{server.url}/templates/{info.template_id}",
                            headers={"X-API-Key": server.api_key}).json()["diskSizeMB"]
        size_mb = int(first.commands.run("df -m --output=size / | tail -1").stdout)
        assert disk_mb * 0.8 <= size_mb <= disk_mb, (size_mb, disk_mb)  # the template's disk, as a booted one

        second = Sandbox.create(name, timeout=120, envs={"WHO": "second"})  # restored again or from the pool
        sandboxes.append(second)
        assert served(server, second) == (boot, pid, 1)  # same post-ready state, its own memory
        assert served(server, first) == (boot, pid, 2)
        assert second.sandbox_id != first.sandbox_id
        assert sandbox_ip(first) != sandbox_ip(second)
        first.files.write("/home/user/only-first.txt", "first")
        assert not second.files.exists("/home/user/only-first.txt")
        assert second.commands.run("echo $WHO").stdout.strip() == "second"

        # each has its own envd token (rotated through /init after the restore)
        token1, token2 = first._envd_access_token, second._envd_access_token
        assert token1 and token2 and token1 != token2
        assert envd_get(server, second, "/envs", token2).json()["WHO"] == "second"
        assert envd_get(server, second, "/envs", token1).status_code == 401
        assert envd_get(server, second, "/envs", None).status_code == 401

        # a later create is served by the warm pool, which fills itself from the snapshot too
        time.sleep(4)
        third = Sandbox.create(name, timeout=120)
        sandboxes.append(third)
        assert created_from(server, third) == "warm"
        assert served(server, third) == (boot, pid, 1)

        # a create asking for other sizes (the Prime API's memory_gb) boots: a restore would keep
        # the snapshot's memory limit
        sized = httpx.post(f"{server.url}/api/v1/sandbox", headers={"Authorization": f"Bearer {server.api_key}"},
                           json={"name": "sized", "docker_image": name, "memory_gb": 2, "timeout_minutes": 5},
                           timeout=60).json()
        deadline = time.monotonic() + 60
        while (status := httpx.get(f"{server.url}/api/v1/sandbox/{sized['id']}", timeout=10,
                                   headers={"Authorization": f"Bearer {server.api_key}"}).json()["status"]) != "RUNNING":
            assert status in ("PENDING", "PROVISIONING") and time.monotonic() < deadline, status
            time.sleep(0.5)
        big = Sandbox.connect(sized["id"], timeout=120)
        sandboxes.append(big)
        assert created_from(server, big) == "booted"
        limit = int(big.commands.run("cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout)
        assert limit == 2 * 1024**3, limit
        assert served(server, big)[0] != boot  # its own start command ran

        # pause/resume of a restored sandbox keeps its memory
        first.pause()
        resumed = Sandbox.connect(first.sandbox_id, timeout=120)
        assert served(server, resumed) == (boot, pid, 3)
        assert resumed.files.read("/home/user/only-first.txt") == "first"
    finally:
        for sbx in sandboxes:
            sbx.kill()
        # snapshots live in the shared data dir: delete the template even when the test failed
        deleted = httpx.delete(f"{server.url}/templates/{info.template_id}", headers={"X-API-Key": server.api_key})
    assert deleted.status_code == 204
    assert not snapshot.exists()
    # nor do warm-pool sandboxes of the deleted template stay around
    top_layer = str(Path(template_layers[0]))
    runtime_files = ((data_dir() / "runtime") / server.instance / "sandboxes").glob("*/runtime.json")
    assert not [f for f in runtime_files if top_layer in f.read_text()]


def test_restart_orphans_and_fallback_without_snapshot(tmp_path: Path) -> None:
    """Restored sandboxes are ordinary ones after a restart; orphan snapshot dirs go at
    start; a build whose snapshot fails still succeeds and its sandboxes run the start command."""
    server = Server(workdir=tmp_path, api_key=ids.new_api_key(), instance=unique_instance("y"),
                    subnet=unique_subnet(10), extra_env={"SANDLOT_WARM_POOL_SIZE": "0"})
    server.start()
    opts = {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
    created: list[str] = []
    templates: list[str] = []
    try:
        name = f"ready-restart-{uuid.uuid4().hex[:8]}"
        templates.append(name)
        t0 = time.monotonic()
        info, log = build(name, **opts)
        print(f"build with a {START_DELAY_S:.0f}s start command: {time.monotonic() - t0:.1f}s")
        assert "Saved post-ready snapshot (" in log, log
        latencies = []
        for _ in range(3):  # no warm pool: every create restores the snapshot
            t0 = time.monotonic()
            sbx = Sandbox.create(name, timeout=120, **opts)
            latencies.append(time.monotonic() - t0)
            created.append(sbx.sandbox_id)
        print("create from the post-ready snapshot (s):", [round(x, 3) for x in latencies])
        assert max(latencies) < START_DELAY_S / 2, latencies
        boot, pid, _ = served(server, sbx)

        orphan = snapshots_dir(server) / "orphan-build"
        orphan.mkdir(parents=True)
        server.stop()
        server.extra_env["SANDLOT_FAILPOINTS"] = "ready-snapshot-fail"
        server.start()
        assert not orphan.exists()
        assert (snapshots_dir(server) / info.build_id).is_dir()

        again = Sandbox.connect(sbx.sandbox_id, **opts)  # re-adopted after the restart
        assert served(server, again) == (boot, pid, 2)
        assert again.commands.run("echo ok").stdout.strip() == "ok"
        fresh = Sandbox.create(name, timeout=120, **opts)  # and the snapshot still restores
        created.append(fresh.sandbox_id)
        assert served(server, fresh) == (boot, pid, 1)
        assert fresh.commands.run("echo ok").stdout.strip() == "ok"

        fallback = f"ready-fallback-{uuid.uuid4().hex[:8]}"
        templates.append(fallback)
        delay = 2.0
        info, log = build(fallback, delay, **opts)
        assert "Could not save a post-ready snapshot" in log and "Saved post-ready" not in log, log
        assert not (snapshots_dir(server) / info.build_id).exists()
        t0 = time.monotonic()
        cold = Sandbox.create(fallback, timeout=120, **opts)
        elapsed = time.monotonic() - t0
        created.append(cold.sandbox_id)
        print(f"create without a snapshot (runs a {delay:.0f}s start command): {elapsed:.3f}s")
        assert elapsed >= delay  # the start command ran on this create, and is serving when it returns
        assert created_from(server, cold) == "booted"
        boot, _, hits = served(server, cold)
        assert hits == 1 and cold.files.read("/tmp/boot") == boot
    finally:
        if server.process is not None:
            for sandbox_id in created:
                Sandbox.kill(sandbox_id, **opts)
            for template in templates:  # their snapshots live in the shared data dir
                httpx.delete(f"{server.url}/templates/{template}", headers={"X-API-Key": server.api_key})
            server.stop()
    assert not snapshots_dir(server).exists()
