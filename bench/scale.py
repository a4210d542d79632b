"""Scale-out (issue 17): the local cluster against a single-box `sandlot serve`, in one run.

Usage (as root, after `make setup`; starts both itself, tears both down):
    .venv/bin/python bench/scale.py [--nodes 3] [--runs 15] [--threads 4] [--creates 24]
                                    [--lookups 200] [--rows 1000]

1. Sandbox.create() -> first ``echo`` latency, sequential, through API instance 1 of the cluster
   and through the single box (both with the warm pool off, so every create boots a sandbox; the
   single box also gets ``SANDLOT_WARM_POOL_SIZE=0``).
2. Throughput: ``--creates`` create -> echo -> kill from ``--threads`` threads, creates/s, both.
3. Placement and lookups as the cluster grows: with 1, 2 and 3 eligible nodes (the others drained)
   and with ``--rows`` extra sandbox rows in the store (paused rows copied from a real one and
   spread over the nodes: every grouped per-node query and index sees them), the create -> echo
   latency through the router (placement is on that path), ``GET /sandboxes/{id}`` through the
   router (a lookup of the holding node + one forwarded request) against the same call sent
   straight to the node (the node token added by hand): their difference is the router's cost.
   The router's placement step (nodes, grouped load query, rank) is also timed in-process on the
   cluster's PostgreSQL, without the router's 1 s node cache.

Prints p50/p95/p99 in ms (bench/create_latency.percentiles). Everything a run makes is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.create_latency import percentiles

NO_WARM_POOL = {"SANDLOT_WARM_POOL_SIZE": "0", "SANDLOT_QUOTA_CONCURRENT_SANDBOXES": "0"}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def create_to_echo(runs: int, opts: dict[str, str]) -> list[float]:
    from e2b import Sandbox

    Sandbox.create(**opts).kill()   # warm-up: connections, caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        sbx = Sandbox.create(timeout=120, **opts)
        sbx.commands.run("echo")
        samples.append((time.perf_counter() - start) * 1000)
        sbx.kill()
    return samples


def throughput(threads: int, creates: int, opts_for: Callable[[int], dict[str, str]]) -> str:
    from e2b import Sandbox

    lock = threading.Lock()
    left = [creates]
    done: list[float] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        opts = opts_for(index)
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                sbx = Sandbox.create(timeout=120, **opts)
                sbx.commands.run("echo")
                ms = (time.perf_counter() - t0) * 1000
                sbx.kill()
            except Exception as exc:  # counted: the rate is of successful creates
                errors.append(exc)
                continue
            with lock:
                done.append(ms)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    line = (f"{len(done)} creates from {threads} threads in {wall:.1f} s: {len(done) / wall:.2f} creates/s, "
            f"{len(errors)} failed" + (f" ({errors[0]!r})" if errors else ""))
    return line + (f"\n      create -> echo {percentiles(done)}" if done else "")


@contextlib.contextmanager
def single_box() -> Iterator[dict[str, str]]:
    from sandlot import ids
    from tests.e2e.server import Server

    with tempfile.TemporaryDirectory(prefix="sandlot-bench-") as workdir:
        server = Server(workdir=Path(workdir), api_key=ids.new_api_key(), extra_env=NO_WARM_POOL)
        server.start()
        try:
            yield {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
        finally:
            server.stop()
            server.reset()


def lookups(count: int, url: str, sandbox_id: str, headers: dict[str, str]) -> list[float]:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        client.get(f"/sandboxes/{sandbox_id}").raise_for_status()
        return [timed(lambda: client.get(f"/sandboxes/{sandbox_id}").raise_for_status()) for _ in range(count)]


def set_status(cluster: Any, node_id: str, status: str) -> None:
    with cluster.admin() as ops:
        ops.post(f"/nodes/{node_id}", json={"status": status}).raise_for_status()


def add_rows(engine: Any, template_row: str, node_ids: list[str], rows: int) -> None:
    """``rows`` paused copies of a real sandbox row, spread over the nodes (ids ``benchrow…``)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        cols = [r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sandboxes'"))]
        overridden = {"id", "state", "node_id", "paused_at"}
        kept = [c for c in cols if c not in overridden]
        quoted = ", ".join(f'"{c}"' for c in kept)
        for i in range(rows):
            conn.execute(text(
                f'INSERT INTO sandboxes (id, state, node_id, paused_at, {quoted}) '
                f'SELECT :id, \'paused\', :node, :now, {quoted} FROM sandboxes WHERE id = :src'),
                {"id": f"benchrow{i:05d}", "node": node_ids[i % len(node_ids)], "src": template_row,
                 "now": datetime.datetime.now(datetime.timezone.utc)})


def drop_rows(engine: Any) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM sandboxes WHERE id LIKE 'benchrow%'"))


def placement_probe(engine_url: str) -> Callable[[], Any]:
    """The router's placement work without its 1 s node cache: read the nodes and their effective
    status, the grouped load query (``cluster/placement.loads``), ``rank``; one session."""
    from sandlot.cluster.directory import NodeView
    from sandlot.cluster.placement import loads, rank
    from sandlot.store import nodes as node_store
    from sandlot.store.database import Database

    db = Database(engine_url)
    stale = 3 * 2.0   # three missed 2 s heartbeats (the cluster's SANDLOT_NODE_HEARTBEAT_S)

    def probe() -> Any:
        now = datetime.datetime.now(datetime.timezone.utc)
        with db.session() as session:
            views = [NodeView(row.id, row.address, node_store.effective_status(row, now, stale),
                              row.cpu_count, row.memory_mb, row.sandbox_slots)
                     for row in node_store.listed(session)]
            ranked = rank(views, loads(session, "base"))
        assert ranked, "no ready node"
        return ranked[0]

    return probe


def cluster_scaling(cluster: Any, runs: int, lookup_count: int, rows: int) -> None:
    from e2b import Sandbox
    from sqlalchemy import create_engine

    state = cluster.state
    node_ids = [n["node_id"] for n in state["nodes"]]
    pg = state["postgres"]
    url = f"postgresql+psycopg://sandlot:{pg['password']}@127.0.0.1:{pg['port']}/sandlot"
    engine = create_engine(url)
    probe = placement_probe(url)
    opts = cluster.sdk_opts(0)
    held = Sandbox.create(timeout=600, **opts)   # the lookups' target, and the rows' model
    try:
        holder = cluster.node(cluster.node_of(held.sandbox_id))
        direct = f"http://{holder['node_ip']}:3000"
        for extra in (0, rows):
            if extra:
                add_rows(engine, held.sandbox_id, node_ids, extra)
            for eligible in range(1, len(node_ids) + 1):
                # the holder always stays eligible: drain the others down to `eligible` nodes
                others = [n for n in node_ids if n != holder["node_id"]]
                drained = others[: len(node_ids) - eligible]
                for node_id in drained:
                    set_status(cluster, node_id, "draining")
                try:
                    time.sleep(1)
                    label = f"{eligible} node(s), {extra:>4} extra rows"
                    print(f"  [{label}] create -> echo (router) {percentiles(create_to_echo(runs, opts))}")
                    via_router = lookups(lookup_count, cluster.api_urls[0], held.sandbox_id,
                                         {"X-API-Key": cluster.api_key})
                    print(f"  [{label}] GET /sandboxes/id router {percentiles(via_router)}")
                    print(f"  [{label}] placement (in-process) "
                          f"{percentiles([timed(probe) for _ in range(lookup_count)])}")
                finally:
                    for node_id in drained:
                        set_status(cluster, node_id, "ready")
            straight = lookups(lookup_count, direct, held.sandbox_id,
                               {"X-API-Key": cluster.api_key, "X-Sandlot-Node-Token": state["node_token"]})
            print(f"  [{extra:>4} extra rows] GET /sandboxes/id straight to its node {percentiles(straight)}")
    finally:
        drop_rows(engine)
        engine.dispose()
        held.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--creates", type=int, default=24)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--scaling-runs", type=int, default=8)
    args = parser.parse_args()
    from tests.e2e.cluster import running_cluster, unavailable

    if reason := unavailable():
        sys.exit(f"bench/scale.py: {reason}")
    print(f"load average before: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    with running_cluster(nodes=args.nodes, extra_env=NO_WARM_POOL) as cluster:
        print(f"cluster up ({args.nodes} nodes, 2 API instances) in {time.perf_counter() - t0:.0f} s")
        with single_box() as box:
            print("create -> first echo, sequential:")
            print(f"  single box       {percentiles(create_to_echo(args.runs, box))}")
            print(f"  cluster (api 1)  {percentiles(create_to_echo(args.runs, cluster.sdk_opts(0)))}")
            print(f"throughput, {args.threads} threads:")
            print(f"  single box       {throughput(args.threads, args.creates, lambda i: box)}")
            print(f"  cluster (both APIs) {throughput(args.threads, args.creates, lambda i: cluster.sdk_opts(i % 2))}")
        print(f"placement and lookups by eligible nodes and store size ({args.scaling_runs} creates, "
              f"{args.lookups} lookups each):")
        cluster_scaling(cluster, args.scaling_runs, args.lookups, args.rows)
        t1 = time.perf_counter()
    print(f"cluster down in {time.perf_counter() - t1:.0f} s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
