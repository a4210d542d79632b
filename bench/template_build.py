"""Template build time (5 steps, cold vs cached) and sandbox create time from a template
with a slow start command.

Usage (as root, after `make setup`):
    .venv/bin/python bench/template_build.py [--runs 5] [--start-delay 3]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. The cold build
uses a fresh nonce so no layer comes from an earlier run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.local_server import with_server


def five_steps(nonce: str):
    from e2b import Template

    return (
        Template().from_template("base")
        .run_cmd(f"echo {nonce} > /tmp/nonce")
        .set_envs({"APP_MODE": "bench"})
        .set_workdir("/srv/app")
        .run_cmd("seq 1 100000 > numbers.txt && sha256sum numbers.txt > sum.txt", user="root")
        .run_cmd("python3 -c 'import json; print(json.dumps({\"ok\": True}))' > out.json", user="root")
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(runs: int, start_delay: float) -> None:
    from e2b import Sandbox, Template, wait_for_port

    nonce = uuid.uuid4().hex[:10]
    name = f"bench-{nonce}"
    cold = timed(lambda: Template.build(five_steps(nonce), name))
    cached = [timed(lambda: Template.build(five_steps(nonce), name)) for _ in range(runs)]
    print(f"5-step build, cold           {cold * 1000:.0f} ms")
    print(f"5-step build, fully cached   median {statistics.median(cached) * 1000:.0f} ms over {runs} runs")

    slow = f"slowstart-{nonce}"
    template = Template().from_template("base").set_start_cmd(
        f"sleep {start_delay} && python3 -m http.server 8000", wait_for_port(8000))
    build = timed(lambda: Template.build(template, slow))
    print(f"template with a {start_delay:.0f}s start command: build {build * 1000:.0f} ms")
    first = timed(lambda: Sandbox.create(slow).kill())  # no warm sandbox yet: restores the post-ready snapshot
    plain, started, ready = [], [], []
    for _ in range(runs):
        time.sleep(start_delay + 2)  # idle time between requests lets the warm pool refill
        t0 = time.perf_counter()
        Sandbox.create("base").kill()
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sbx = Sandbox.create(slow)
        started.append(time.perf_counter() - t0)
        ready.append(sbx.commands.run("curl -s -o /dev/null -w '%{http_code}' localhost:8000").stdout == "200")
        sbx.kill()
    print(f"Sandbox.create('base')                   median {statistics.median(plain) * 1000:.0f} ms")
    print(f"Sandbox.create(<{start_delay:.0f}s start command>), first (snapshot restore)  {first * 1000:.0f} ms")
    print(f"Sandbox.create(<{start_delay:.0f}s start command>), warm pool     median "
          f"{statistics.median(started) * 1000:.0f} ms; server already answering in {sum(ready)}/{len(ready)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--start-delay", type=float, default=3.0)
    args = parser.parse_args()
    with_server(lambda: run(args.runs, args.start_delay))


if __name__ == "__main__":
    main()
