"""Command throughput and file transfer rates through the front door, with the e2b SDK.

Usage (as root, after `make setup`):
    .venv/bin/python bench/commands_files.py [--concurrency 16] [--commands 400]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. Prints:
round-trip latency percentiles of ``commands.run("true")`` beside its floor measured in the
same sandbox in the same run (``bash -l -c true`` timed by a shell loop inside the sandbox:
every command envd runs goes through ``bash -l -c``), concurrent command throughput
(commands/s) and upload/download MB/s for 1 MiB, 100 MiB and 1 GiB files
(``--sizes-mib ''`` skips the files; ``--rounds 0`` skips the commands; ``--reps N`` repeats
each transfer), each beside its floors measured in the same run: ``cp`` of the same bytes to a
new file and ``cat`` of it to ``/dev/null``, timed inside the sandbox (what the sandbox's file
system costs without envd, HTTP, the front door or the SDK), and the SDK's own HTTP client
(httpx, as ``files.write``/``files.read`` use it: a file-object upload with a Content-Length,
a streamed chunked download in 1 MiB chunks) against a socket server in this process that
only reads or writes the bytes.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
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


FILE_FLOOR_SCRIPT = (
    "s=$EPOCHREALTIME; cp bench.bin floor.bin; m=$EPOCHREALTIME; cat floor.bin >/dev/null; "
    "e=$EPOCHREALTIME; rm -f floor.bin; echo $s $m $e"
)


def file_floor_s(sbx: object) -> tuple[float, float]:
    """Seconds for ``cp`` and ``cat`` of ``bench.bin`` inside the sandbox."""
    s, m, e = (float(x) for x in sbx.commands.run(FILE_FLOOR_SCRIPT).stdout.split())  # type: ignore[attr-defined]
    return m - s, e - m


def _dumb_server(size: int) -> tuple[socket.socket, int]:
    """A keep-alive HTTP/1.1 server that drains request bodies and answers GETs with ``size``
    bytes in 1 MiB chunks: the cheapest peer the SDK's httpx could have."""
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        buffer = memoryview(bytearray(MiB))
        block = bytes(MiB)
        with conn, reader:
            while line := reader.readline():
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                while length:
                    length -= reader.readinto(buffer[:min(length, MiB)])
                if line.startswith(b"POST"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]")
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for _ in range(size // MiB):
                    conn.sendall(b"%x\r\n" % MiB + block + b"\r\n")
                conn.sendall(b"0\r\n\r\n")

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def sdk_floor_s(source: str, size: int) -> tuple[float, float]:
    """Seconds for httpx to upload ``source`` and stream ``size`` bytes back from a dumb server."""
    import httpx

    listener, port = _dumb_server(size)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=None) as client:
            start = time.perf_counter()
            with open(source, "rb") as handle:
                client.post("/files", content=handle)
            up = time.perf_counter() - start
            start = time.perf_counter()
            with client.stream("GET", "/files") as response:
                received = sum(len(chunk) for chunk in response.iter_bytes())
            assert received == size, (received, size)
            return up, time.perf_counter() - start
    finally:
        listener.close()


def run(concurrency: int, commands: int, sizes: list[int], rounds: int, reps: int = 1) -> None:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=1800)
    try:
        sbx.commands.run("true")  # warm the connection
        if rounds:
            commands_bench(sbx, concurrency, commands, rounds)
        for size in sizes:
            label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
            with tempfile.NamedTemporaryFile() as source:
                source.truncate(size)
                for _ in range(reps):
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
                    cp_s, cat_s = file_floor_s(sbx)
                    sdk_up, sdk_down = sdk_floor_s(source.name, size)
                    mib = size / MiB
                    print(f"file {label:>8}: upload {mib / up:6.0f} MiB/s  download {mib / down:6.0f} MiB/s  "
                          f"| floors: in sandbox cp {mib / cp_s:5.0f} cat {mib / cat_s:5.0f}, "
                          f"SDK's httpx vs a dumb server up {mib / sdk_up:5.0f} down {mib / sdk_down:5.0f} MiB/s")
            sbx.files.remove("bench.bin")
    finally:
        sbx.kill()


def commands_bench(sbx: object, concurrency: int, commands: int, rounds: int) -> None:
    rtt: list[float] = []
    floor: list[float] = []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        floor += floor_ms(sbx, 50)
        for _ in range(50):
            start = time.perf_counter()
            sbx.commands.run("true")  # type: ignore[attr-defined]
            rtt.append((time.perf_counter() - start) * 1000)
    print(f"commands.run('true') round trip   {percentiles(rtt)}")
    print(f"floor: bash -l -c true in sandbox {percentiles(floor)}")
    print(f"over the floor (p50)              {statistics.median(rtt) - statistics.median(floor):.2f} ms")

    def one(_: int) -> None:
        sbx.commands.run("echo x")  # type: ignore[attr-defined]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(commands)))
    elapsed = time.perf_counter() - start
    print(f"concurrent commands ({concurrency} clients)  {commands / elapsed:.0f} commands/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--commands", type=int, default=400)
    parser.add_argument("--sizes-mib", type=str, default="1,100,1024")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 50 floor runs + 50 commands (0: none)")
    parser.add_argument("--reps", type=int, default=1, help="transfers of each file size")
    args = parser.parse_args()
    sizes = [int(s) * MiB for s in args.sizes_mib.split(",") if s]
    with_server(lambda: run(args.concurrency, args.commands, sizes, args.rounds, args.reps))


if __name__ == "__main__":
    main()
