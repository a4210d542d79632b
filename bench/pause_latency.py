"""Latency of pause, resume (connect → 201), snapshot and fork, measured from the SDK side.

Usage (as root, after `make setup`):
    .venv/bin/python bench/pause_latency.py [--runs 10] [--big-runs 5] [--big-mb 200] [--idle-only]

Starts its own `sandlot serve` on loopback twice: first with hot pauses (``SANDLOT_HOT_PAUSE_S``
600: pause = freeze, resume = thaw), then with CRIU pauses (``SANDLOT_HOT_PAUSE_S=0``), and prints
p50/p95 in milliseconds for an idle sandbox and one whose Python process holds --big-mb of
(random) memory; snapshots and forks are measured in the CRIU run only. ``--mode hot|cold``
runs one of the two. The floor,
``criu dump`` / ``criu restore`` of a trivial process with its images on the data dir's file
system, is measured first in the same run (``bench/floors.py``). ``--idle-only``: pause and
resume of the idle sandbox only (no snapshots, forks or big sandbox).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return f"n={len(ordered)} p50={pick(0.50):.0f} p95={pick(0.95):.0f} max={ordered[-1]:.0f} (ms)"


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def pause_resume(label: str, runs: int, hold_mb: int, idle_only: bool = False) -> None:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=600)
    try:
        if hold_mb:
            sbx.commands.run(
                f"python3 -c 'import os,time\nb=bytearray(os.urandom(1<<20))*{hold_mb}\nwhile True: time.sleep(1)'",
                background=True)
            time.sleep(3)
        pauses, resumes, first_cmd = [], [], []
        for _ in range(runs):
            pauses.append(_timed(sbx.pause))
            resumes.append(_timed(lambda: Sandbox.connect(sbx.sandbox_id, timeout=600)))
            first_cmd.append(_timed(lambda: sbx.commands.run("true")))
        print(f"{label:<22} pause        {percentiles(pauses)}")
        print(f"{label:<22} resume       {percentiles(resumes)}")
        print(f"{label:<22} 1st command  {percentiles(first_cmd)}")
        if idle_only:
            return
        snaps, ids = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            ids.append(sbx.create_snapshot().snapshot_id)
            snaps.append((time.perf_counter() - t0) * 1000)
        print(f"{label:<22} snapshot     {percentiles(snaps)}")
        starts = []
        for sid in ids[: max(1, runs // 2)]:
            t0 = time.perf_counter()
            clone = Sandbox.create(sid, timeout=60)
            starts.append((time.perf_counter() - t0) * 1000)
            clone.kill()
        print(f"{label:<22} from snapshot {percentiles(starts)}")
        for sid in ids:
            Sandbox.delete_snapshot(sid)
        for count in (1, 4):
            t0 = time.perf_counter()
            forks = sbx.fork(count=count, timeout=60)
            ms = (time.perf_counter() - t0) * 1000
            print(f"{label:<22} fork x{count}      {ms:.0f} ms total")
            for f in forks:
                if isinstance(f, Sandbox):
                    f.kill()
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--big-runs", type=int, default=5)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--idle-only", action="store_true")
    parser.add_argument("--floor-runs", type=int, default=10)
    parser.add_argument("--mode", choices=("both", "hot", "cold"), default="both")
    args = parser.parse_args()
    import os

    from bench import floors

    print(f"load average before: {os.getloadavg()[0]:.1f}")
    floors.criu_dump_restore(args.floor_runs)
    from sandlot import ids
    from tests.e2e.server import Server, sdk_pointed_at, unique_instance, unique_subnet

    modes = ("hot", "cold") if args.mode == "both" else (args.mode,)
    for mode in modes:
        server = Server(workdir=Path(tempfile.mkdtemp(prefix="sandlot-bench-")), api_key=ids.new_api_key(),
                        instance=unique_instance("b"), subnet=unique_subnet(9),
                        extra_env={"SANDLOT_HOT_PAUSE_S": "600" if mode == "hot" else "0"})
        server.start()
        try:
            with sdk_pointed_at(server):
                # hot: pause/resume only (snapshots and forks don't depend on the pause mode)
                only_pause = args.idle_only or mode == "hot"
                pause_resume(f"idle, {mode}", args.runs, 0, only_pause)
                if not args.idle_only:
                    pause_resume(f"{args.big_mb} MB, {mode}", args.big_runs, args.big_mb, only_pause)
                print(f"load average after the {mode} run: {os.getloadavg()[0]:.1f}")
        finally:
            for item in httpx.get(f"{server.url}/v2/sandboxes", headers={"X-API-Key": server.api_key}).json():
                httpx.delete(f"{server.url}/sandboxes/{item['sandboxID']}", headers={"X-API-Key": server.api_key},
                             timeout=60)
            server.stop()


if __name__ == "__main__":
    main()
