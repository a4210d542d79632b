"""Issue 17's acceptance on a real local cluster (``scripts/local-cluster.sh up 3``): PostgreSQL 15,
two ``sandlot api`` instances on loopback, three ``sandlot node`` agents each in its own network
namespace, driven by the unmodified e2b SDK (and httpx as the operator's client for ``/nodes``).

Creates spread over the nodes; commands, files, a port and a WebSocket work through either API
instance; a drain stops placement on a node; a template built on one node starts on the others; a
sandbox paused on one node resumes on another; a node agent killed with SIGKILL has its sandboxes
reported gone, new creates go elsewhere, and its restart leaks nothing.
"""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from e2b import Sandbox, Template
from websockets.sync.client import connect as ws_connect

from tests.e2e.cluster import LocalCluster, running_cluster, unavailable, wait_until

REASON = unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

HTTP_PORT, WS_PORT = 8000, 8765
NETWORK_POOL_SIZE = 4   # Settings.network_pool_size default
GONE_WAIT_S = 60        # polled: 3 missed 2 s heartbeats plus a sweep, with room for a loaded box

WS_SERVER = f"""
import asyncio, sys
sys.path.insert(0, "/home/user/lib")
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "0.0.0.0", {WS_PORT}):
        await asyncio.Future()
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # no warm pools: three nodes' idle sandboxes would only cost this 2-core box CPU
    root = tmp_path_factory.mktemp("cluster")
    with running_cluster(root / "c", nodes=3, extra_env={"SANDLOT_WARM_POOL_SIZE": "0"}) as running:
        yield running


def held(cluster: LocalCluster, sandbox: Sandbox) -> str:
    node = cluster.node_of(sandbox.sandbox_id)
    assert node is not None, f"no node lists {sandbox.sandbox_id}"
    return node


def wait_port(sbx: Sandbox, port: int) -> None:
    sbx.commands.run(f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && exit 0; "
                     "sleep 0.1; done; exit 1", timeout=30)


def test_creates_spread_and_traffic_works_through_either_api(cluster: LocalCluster) -> None:
    sandboxes = [Sandbox.create(timeout=300, **cluster.sdk_opts(i % 2)) for i in range(3)]
    try:
        placed = {sbx.sandbox_id: held(cluster, sbx) for sbx in sandboxes}
        assert len(set(placed.values())) >= 2, placed   # free slots lead placement: not all on one node
        counts = {node_id: n["sandboxCount"] for node_id, n in cluster.nodes().items()}
        assert sum(counts.values()) == 3, counts
        for node_id in set(placed.values()):
            assert counts[node_id] == list(placed.values()).count(node_id)

        package = Path(websockets.__file__).parent
        lib = [{"path": f"/home/user/lib/websockets/{p.relative_to(package)}", "data": p.read_bytes()}
               for p in package.rglob("*.py")]
        for i, sbx in enumerate(sandboxes):
            api = (i + 1) % 2   # the other API instance than the one that created it
            other = Sandbox.connect(sbx.sandbox_id, **cluster.sdk_opts(api))
            assert other.commands.run("echo hello $(hostname)").stdout.startswith("hello ")
            other.files.write("/home/user/www/index.txt", f"served by {sbx.sandbox_id}\n")
            assert other.files.read("/home/user/www/index.txt") == f"served by {sbx.sandbox_id}\n"
            other.commands.run(f"cd /home/user/www && python3 -m http.server {HTTP_PORT}", background=True)
            wait_port(other, HTTP_PORT)
            for url in cluster.api_urls:   # the port through both front doors, by Host and by headers
                by_host = httpx.get(f"{url}/index.txt", headers={"Host": other.get_host(HTTP_PORT)}, timeout=30)
                assert by_host.status_code == 200 and by_host.text == f"served by {sbx.sandbox_id}\n"
                by_headers = httpx.get(f"{url}/index.txt", timeout=30, headers={
                    "E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(HTTP_PORT)})
                assert by_headers.status_code == 200 and by_headers.text == by_host.text

        ws_sbx = sandboxes[0]
        ws_sbx.files.write_files(lib)   # type: ignore[arg-type]
        ws_sbx.files.write("/home/user/ws.py", WS_SERVER)
        ws_sbx.commands.run("python3 /home/user/ws.py", background=True)
        wait_port(ws_sbx, WS_PORT)
        for url in cluster.api_urls:
            port = int(url.rsplit(":", 1)[1])
            with ws_connect(f"ws://{ws_sbx.get_host(WS_PORT)}/", sock=socket.create_connection(("127.0.0.1", port)),
                            max_size=None) as ws:
                blob = bytes(range(256)) * 1024
                ws.send(blob)
                assert ws.recv() == blob
                ws.send(f"through {url}")
                assert ws.recv() == f"through {url}"
    finally:
        for sbx in sandboxes:
            sbx.kill()


def test_drain_stops_placement_on_that_node(cluster: LocalCluster) -> None:
    drained = "node-1"
    with cluster.admin(1) as ops:
        assert ops.post(f"/nodes/{drained}", json={"status": "draining"}).status_code == 204
        try:
            assert wait_until(lambda: cluster.nodes()[drained]["status"] == "draining", 30)
            sandboxes = [Sandbox.create(timeout=120, **cluster.sdk_opts(i % 2)) for i in range(3)]
            try:
                where = [held(cluster, sbx) for sbx in sandboxes]
                assert drained not in where, where
                assert cluster.nodes()[drained]["sandboxCount"] == 0
            finally:
                for sbx in sandboxes:
                    sbx.kill()
        finally:
            assert ops.post(f"/nodes/{drained}", json={"status": "ready"}).status_code == 204
    assert wait_until(lambda: cluster.nodes()[drained]["status"] == "ready", 30)


def test_template_built_on_one_node_starts_on_the_others(cluster: LocalCluster) -> None:
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex
    Template.build(Template().from_template("base").run_cmd(f"echo {marker} > /home/user/x"), name,
                   cpu_count=1, memory_mb=512, api_key=cluster.api_key, api_url=cluster.api_urls[0])
    drained: list[str] = []
    started: list[str] = []
    try:
        with cluster.admin() as ops:
            for i in range(3):   # each create lands on a node not used yet: the others are drained
                sbx = Sandbox.create(name, timeout=120, **cluster.sdk_opts(i % 2))
                try:
                    node = held(cluster, sbx)
                    assert node not in started
                    started.append(node)
                    assert sbx.files.read("/home/user/x").strip() == marker
                finally:
                    sbx.kill()
                if i < 2:
                    assert ops.post(f"/nodes/{node}", json={"status": "draining"}).status_code == 204
                    drained.append(node)
    finally:
        with cluster.admin() as ops:
            for node in drained:
                ops.post(f"/nodes/{node}", json={"status": "ready"})
    assert sorted(started) == sorted(cluster.nodes())


def test_paused_on_one_node_resumes_on_another(cluster: LocalCluster) -> None:
    if importlib.util.find_spec("sandlot.orchestrator.adoption") is None:
        pytest.skip("resuming on another node (pause images in the blob store + adoption, "
                    "orchestrator/adoption.py) is not built yet")
    sbx = Sandbox.create(timeout=300, **cluster.sdk_opts(0))
    try:
        sbx.files.write("/home/user/kept.txt", "kept across nodes")
        sbx.commands.run("sleep 3600", background=True)
        origin = held(cluster, sbx)
        assert sbx.pause() is True
        with cluster.admin() as ops:
            assert ops.post(f"/nodes/{origin}", json={"status": "draining"}).status_code == 204
            try:
                resumed = Sandbox.connect(sbx.sandbox_id, timeout=300, **cluster.sdk_opts(1))
                assert resumed.files.read("/home/user/kept.txt") == "kept across nodes"
                assert "sleep 3600" in resumed.commands.run("ps -eo args").stdout   # memory came along too
                now = held(cluster, resumed)
                assert now != origin
            finally:
                ops.post(f"/nodes/{origin}", json={"status": "ready"})
    finally:
        sbx.kill()


def test_killed_node_sandboxes_gone_creates_elsewhere_restart_leaks_nothing(cluster: LocalCluster) -> None:
    sandboxes = [Sandbox.create(timeout=300, **cluster.sdk_opts(i % 2)) for i in range(3)]
    survivors: list[Sandbox] = []
    try:
        placed = {sbx.sandbox_id: held(cluster, sbx) for sbx in sandboxes}
        victim = placed[sandboxes[0].sandbox_id]
        doomed = [sbx for sbx in sandboxes if placed[sbx.sandbox_id] == victim]
        survivors = [sbx for sbx in sandboxes if placed[sbx.sandbox_id] != victim]
        cluster.kill_node(cluster.node_number(victim))

        def gone() -> bool:
            listed = {s.sandbox_id for s in Sandbox.list(**cluster.sdk_opts(1)).next_items()}
            return not listed & {sbx.sandbox_id for sbx in doomed}

        assert wait_until(gone, GONE_WAIT_S), "a dead node's sandboxes are still listed"
        for sbx in doomed:   # both API instances answer 404 for them, as for any sandbox that is gone
            for url in cluster.api_urls:
                info = httpx.get(f"{url}/sandboxes/{sbx.sandbox_id}", headers={"X-API-Key": cluster.api_key},
                                 timeout=30)
                assert info.status_code == 404, info.text
        assert cluster.nodes()[victim]["status"] != "ready"
        for sbx in survivors:
            assert sbx.commands.run("echo alive").stdout.strip() == "alive"

        fresh = [Sandbox.create(timeout=120, **cluster.sdk_opts(i % 2)) for i in range(2)]
        try:
            assert victim not in [held(cluster, sbx) for sbx in fresh]
        finally:
            for sbx in fresh:
                sbx.kill()

        cluster.start_node(cluster.node_number(victim))
        assert wait_until(lambda: cluster.nodes()[victim]["status"] == "ready", 60)
        empty: dict[str, list[str]] = {"containers": [], "mounts": [], "cgroups": [], "dirs": []}
        # the restart (or its reaper right after) removes the dead sandboxes' containers, mounts, cgroups, dirs
        assert wait_until(lambda: cluster.traces(victim) == empty, 60), cluster.traces(victim)
        assert len(cluster.netns(victim)) <= NETWORK_POOL_SIZE
        assert cluster.nodes()[victim]["sandboxCount"] == 0
    finally:
        for sbx in survivors:
            sbx.kill()
