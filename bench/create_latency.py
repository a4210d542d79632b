"""Latency of Sandbox.create() → first command, and of a command round trip.

Usage (as root, after `make setup`):
    .venv/bin/python bench/create_latency.py [--runs 30] [--commands 200]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set, then
prints p50/p95/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--pause-s", type=float, default=0.0, help="idle time between creates (not timed)")
    args = parser.parse_args()
    with_server(lambda: run(args.runs, args.commands, args.pause_s))


if __name__ == "__main__":
    main()
