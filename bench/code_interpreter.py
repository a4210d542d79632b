"""code-interpreter-v1: template build time, Sandbox.create() → first run_code, run_code round trip.

Usage (as root, after `make setup`):
    .venv/bin/python bench/code_interpreter.py [--creates 5] [--cells 100]

Starts its own `sandlot serve` on loopback (which builds the template at start-up) unless
E2B_API_URL is set; then waits for the build and reads its duration from the build log
(whether the steps were cached is printed too: a cold build needs a data dir whose layer
cache has never seen this template).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.local_server import with_server

TEMPLATE = "code-interpreter-v1"


def wait_for_build() -> list[str]:
    api, headers = os.environ["E2B_API_URL"], {"X-API-Key": os.environ["E2B_API_KEY"]}
    template = httpx.get(f"{api}/templates/{TEMPLATE}", headers=headers).raise_for_status().json()
    build_id, logs = template["builds"][0]["buildID"], []
    while True:
        status = httpx.get(f"{api}/templates/{template['templateID']}/builds/{build_id}/status",
                           params={"logsOffset": len(logs)}, headers=headers).raise_for_status().json()
        logs += status["logs"]
        if status["status"] in ("ready", "error"):
            if status["status"] == "error":
                raise SystemExit(f"build failed: {status.get('reason')}")
            return logs
        time.sleep(1)


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return f"p50 {pick(0.5):.0f} ms, p95 {pick(0.95):.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def run(creates: int, cells: int) -> None:
    from e2b_code_interpreter import Sandbox

    logs = wait_for_build()
    for line in logs:
        if "Build finished" in line or "CACHED" in line or "Template is ready" in line or "snapshot" in line:
            print("build log:", line)
    first: list[float] = []
    for i in range(creates):
        if i:
            time.sleep(5)  # lets the warm pool refill, as between real requests
        t0 = time.perf_counter()
        sbx = Sandbox.create(timeout=120)
        t1 = time.perf_counter()
        assert sbx.run_code("1+1").text == "2"
        t2 = time.perf_counter()
        first.append(t2 - t0)
        print(f"create {i + 1}: Sandbox.create {(t1 - t0) * 1000:.0f} ms + first run_code {(t2 - t1) * 1000:.0f} ms")
        if i < creates - 1:
            sbx.kill()
    print(f"Sandbox.create() → first run_code('1+1') ({creates} runs): {percentiles(first)}")
    rounds = []
    for _ in range(cells):
        t0 = time.perf_counter()
        sbx.run_code("1+1")
        rounds.append(time.perf_counter() - t0)
    mean = statistics.mean(rounds) * 1000
    print(f"run_code('1+1') round trip ({cells} runs): {percentiles(rounds)} (mean {mean:.1f} ms)")
    sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=5)
    parser.add_argument("--cells", type=int, default=100)
    args = parser.parse_args()
    with_server(lambda: run(args.creates, args.cells), extra_env={"SANDLOT_CODE_INTERPRETER_TEMPLATE": "true"})


if __name__ == "__main__":
    main()
