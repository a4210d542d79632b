"""Command throughput and file transfer rates through the front door, with the e2b SDK.

Usage (as root, after `make setup`):
    .venv/bin/python bench/commands_files.py [--concurrency 16] [--commands 400]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. Prints:
round-trip latency percentiles, concurrent command throughput (commands/s) and
upload/download MB/s for 1 MiB, 100 MiB and 1 GiB files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.create_latency import percentiles
from bench.local_server import with_server

MiB = 1024 * 1024


def run(concurrency: int, commands: int, sizes: list[int]) -> None:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=1800)
    try:
        rtt = []
        for _ in range(100):
            start = time.perf_counter()
            sbx.commands.run("true")
            rtt.append((time.perf_counter() - start) * 1000)
        print(f"commands.run('true') round trip   {percentiles(rtt)}")

        def one(_: int) -> None:
            sbx.commands.run("echo x")

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(commands)))
        elapsed = time.perf_counter() - start
        print(f"concurrent commands ({concurrency} clients)  {commands / elapsed:.0f} commands/s")

        for size in sizes:
            with tempfile.NamedTemporaryFile() as source:
                source.truncate(size)
                source.seek(0)
                start = time.perf_counter()
                with open(source.name, "rb") as handle:
                    sbx.files.write("bench.bin", handle)
                up = time.perf_counter() - start
            start = time.perf_counter()
            received = 0
            for chunk in sbx.files.read("bench.bin", format="stream"):
                received += len(chunk)
            down = time.perf_counter() - start
            assert received == size, (received, size)
            label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
            print(f"file {label:>8}: upload {size / MiB / up:7.1f} MiB/s   download {size / MiB / down:7.1f} MiB/s")
            sbx.files.remove("bench.bin")
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--commands", type=int, default=400)
    parser.add_argument("--sizes-mib", type=str, default="1,100,1024")
    args = parser.parse_args()
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",")]
    with_server(lambda: run(args.concurrency, args.commands, sizes))


if __name__ == "__main__":
    main()
