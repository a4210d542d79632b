"""Latency of Sandbox.create() → first command, and of a command round trip.

Usage (as root, after `make setup`):
    .venv/bin/python bench/create_latency.py [--runs 30] [--commands 200] [--pause-s 1]
    .venv/bin/python bench/create_latency.py --threads 4 --creates 200   # throughput

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set, then
prints p50/p95/p99 in milliseconds. ``--threads``: ``--creates`` sandboxes from that many
threads, each create → ``commands.run("echo")`` → ``kill()``, and the sustained rate (first
and second half apart). The floor, a bare ``runc run`` of the base rootfs, is measured first
in the same run (``bench/floors.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench import floors
from bench.local_server import with_server


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return (
        f"n={len(ordered)} p50={pick(0.50):.1f} p95={pick(0.95):.1f} p99={pick(0.99):.1f} "
        f"mean={statistics.fmean(ordered):.1f} max={ordered[-1]:.1f} (ms)"
    )


def run(runs: int, commands: int, pause_s: float = 0.0) -> None:
    from e2b import Sandbox

    Sandbox.create().kill()  # warm-up: first connection, caches
    create_to_echo, create_only = [], []
    for _ in range(runs):
        start = time.perf_counter()
        sbx = Sandbox.create()
        created = time.perf_counter()
        sbx.commands.run("echo")
        done = time.perf_counter()
        create_only.append((created - start) * 1000)
        create_to_echo.append((done - start) * 1000)
        sbx.kill()
        time.sleep(pause_s)  # lets the warm pool refill, as between real agents' requests
    sbx = Sandbox.create()
    try:
        round_trips = []
        for _ in range(commands):
            start = time.perf_counter()
            sbx.commands.run("true")
            round_trips.append((time.perf_counter() - start) * 1000)
    finally:
        sbx.kill()
    print(f"Sandbox.create()                 {percentiles(create_only)}")
    print(f"Sandbox.create() -> first echo   {percentiles(create_to_echo)}")
    print(f"commands.run('true') round trip  {percentiles(round_trips)}")


def throughput(threads: int, creates: int) -> None:
    from e2b import Sandbox

    Sandbox.create().kill()
    lock = threading.Lock()
    left = [creates]
    done: list[tuple[float, float]] = []   # (finished at, create → echo ms)
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                sbx = Sandbox.create()
                sbx.commands.run("echo")
                ms = (time.perf_counter() - t0) * 1000
                sbx.kill()
            except Exception as exc:  # counted, not fatal: the rate is of successful creates
                errors.append(exc)
                continue
            with lock:
                done.append((time.perf_counter(), ms))

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    ends = sorted(at for at, _ in done)
    half = len(ends) // 2
    print(f"{len(done)} creates (create -> echo -> kill) from {threads} threads in {wall:.1f} s: "
          f"{len(done) / wall:.1f} creates/s; {len(errors)} failed" + (f" ({errors[0]!r})" if errors else ""))
    if half >= 2:
        first = half / (ends[half - 1] - start)
        second = (len(ends) - half) / (ends[-1] - ends[half - 1])
        print(f"  sustained: first half {first:.1f}/s, second half {second:.1f}/s")
    print(f"  create -> echo per sandbox  {percentiles([ms for _, ms in done])}")
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--pause-s", type=float, default=0.0, help="idle time between creates (not timed)")
    parser.add_argument("--threads", type=int, default=0, help="throughput mode: creates from this many threads")
    parser.add_argument("--creates", type=int, default=200, help="throughput mode: how many creates")
    parser.add_argument("--floor-runs", type=int, default=20)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    floors.runc_run(args.floor_runs)
    if args.threads:
        with_server(lambda: throughput(args.threads, args.creates))
    else:
        with_server(lambda: run(args.runs, args.commands, args.pause_s))


if __name__ == "__main__":
    main()
