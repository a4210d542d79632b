"""File transfer through the front door vs straight to envd, with the unmodified e2b SDK.

Usage (as root, after `make setup`):
    .venv/bin/python bench/frontdoor_files.py [--sizes-mib 64,1024] [--reps 3]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. One sandbox; the same
`files.write` / `files.read` (stream) run twice in the same run: through the front door
(``E2B_SANDBOX_URL`` = the server) and directly to envd on the sandbox IP (the floor for
the front door: what envd and the SDK cost without it). The best of ``--reps`` runs is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_server import with_server

MiB = 1024 * 1024


def transfer(sbx: object, source: str, size: int) -> tuple[float, float]:
    """Seconds for one upload and one download of ``size`` bytes."""
    start = time.perf_counter()
    with open(source, "rb") as handle:
        sbx.files.write("bench.bin", handle)  # type: ignore[attr-defined]
    up = time.perf_counter() - start
    start = time.perf_counter()
    received = 0
    for chunk in sbx.files.read("bench.bin", format="stream"):  # type: ignore[attr-defined]
        received += len(chunk)
    down = time.perf_counter() - start
    assert received == size, (received, size)
    return up, down


def run(sizes: list[int], reps: int) -> None:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=1800)
    try:
        ip = sbx.commands.run("hostname -I").stdout.split()[0]
        front_url = os.environ["E2B_SANDBOX_URL"]
        os.environ["E2B_SANDBOX_URL"] = f"http://{ip}:49983"
        try:
            direct = Sandbox.connect(sbx.sandbox_id)
        finally:
            os.environ["E2B_SANDBOX_URL"] = front_url
        print(f"{'':34} {'upload MiB/s':>13} {'download MiB/s':>15}")
        for size in sizes:
            label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
            with tempfile.NamedTemporaryFile() as source:
                source.write(os.urandom(MiB) * (size // MiB))
                source.flush()
                for name, target in (("direct to envd (floor)", direct), ("front door", sbx)):
                    runs = [transfer(target, source.name, size) for _ in range(reps)]
                    up, down = min(r[0] for r in runs), min(r[1] for r in runs)
                    print(f"{label:>8} {name:25} {size / MiB / up:13.1f} {size / MiB / down:15.1f}")
        sbx.files.remove("bench.bin")
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mib", type=str, default="64")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",")]
    with_server(lambda: run(sizes, args.reps))


if __name__ == "__main__":
    main()
