"""Command throughput and file transfer rates through the front door, with the e2b SDK.

Usage (as root, after `make setup`):
    .venv/bin/python bench/commands_files.py [--concurrency 16] [--commands 400]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. Prints:
round-trip latency percentiles of ``commands.run("true")`` beside its floor measured in the
same sandbox in the same run (``bash -l -c true`` timed by a shell loop inside the sandbox:
every command envd runs goes through ``bash -l -c``), concurrent command throughput
(commands/s) and upload/download MB/s for 1 MiB, 100 MiB and 1 GiB files
(``--sizes-mib ''`` skips the files).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.create_latency import percentiles
from bench.local_server import with_server

MiB = 1024 * 1024


FLOOR_SCRIPT = (
    "for i in $(seq {n}); do s=$EPOCHREALTIME; bash -l -c true; e=$EPOCHREALTIME; "
    "echo $s $e; done"
)


def floor_ms(sbx: object, runs: int) -> list[float]:
    """``bash -l -c true`` timed inside the sandbox: what a command costs without envd."""
    out = sbx.commands.run(FLOOR_SCRIPT.format(n=runs)).stdout  # type: ignore[attr-defined]
    return [(float(e) - float(s)) * 1000 for s, e in (line.split() for line in out.splitlines())]


def run(concurrency: int, commands: int, sizes: list[int], rounds: int) -> None:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=1800)
    try:
        sbx.commands.run("true")  # warm the connection
        rtt: list[float] = []
        floor: list[float] = []
        for _ in range(rounds):  # interleaved, so both see the same machine load
            floor += floor_ms(sbx, 50)
            for _ in range(50):
                start = time.perf_counter()
                sbx.commands.run("true")
                rtt.append((time.perf_counter() - start) * 1000)
        print(f"commands.run('true') round trip   {percentiles(rtt)}")
        print(f"floor: bash -l -c true in sandbox {percentiles(floor)}")
        print(f"over the floor (p50)              {statistics.median(rtt) - statistics.median(floor):.2f} ms")

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
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 50 floor runs + 50 commands")
    args = parser.parse_args()
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",") if s]
    with_server(lambda: run(args.concurrency, args.commands, sizes, args.rounds))


if __name__ == "__main__":
    main()
