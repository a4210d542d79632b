"""Front-door overhead: the same HTTP server in a sandbox, reached directly and through Sandlot.

Usage (as root, after `make setup`):
    .venv/bin/python bench/frontdoor_overhead.py [--requests 2000] [--concurrency 8]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. Inside one sandbox a
keep-alive HTTP/1.1 server answers a 64-byte body; the host then sends the same requests to
the sandbox IP directly and to the front door (E2b-Sandbox-Id/Port headers), in the same run,
sequentially (p50/p95 latency), with N concurrent httpx clients, and with N raw keep-alive
sockets from a separate uvloop process (requests/s the paths can carry, not the client).
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

PORT = 8080
SERVER = f"""
import asyncio
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Length: 64\\r\\n\\r\\n" + b"x" * 64
class H(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\\r\\n\\r\\n")) >= 0:   # bodyless GETs only
            self.buffer = self.buffer[end + 4:]
            self.transport.write(RESPONSE)
async def main():
    server = await asyncio.get_running_loop().create_server(H, "0.0.0.0", {PORT})
    await server.serve_forever()
asyncio.run(main())
"""
"""A keep-alive server answering 64 bytes to every GET: fast enough that the relay, not the
sandbox's server, is what the relayed numbers measure (the direct row is its floor)."""

LOAD = r"""
import asyncio, sys, time
host, port, extra, conns, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
request = ("GET / HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (host, port, extra.replace("|", "\r\n"))).encode()
count = 0
async def client(deadline):
    global count
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < deadline:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        count += 1
    writer.close()
async def main():
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(client(deadline) for _ in range(conns)))
    print(count / (time.perf_counter() - start))
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main())
"""
"""Requests/s from raw keep-alive sockets on asyncio (uvloop): an httpx client in threads
tops out near 1,500 req/s, below what either path serves."""


from bench.local_server import with_server  # noqa: E402


def sequential(url: str, headers: dict[str, str], n: int) -> list[float]:
    import httpx

    with httpx.Client(headers=headers) as client:
        for _ in range(50):
            client.get(url)
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            response = client.get(url)
            assert response.status_code == 200, response.text
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def concurrent(url: str, headers: dict[str, str], n: int, workers: int) -> float:
    import httpx

    per_worker = n // workers

    def work() -> None:
        with httpx.Client(headers=headers) as client:
            for _ in range(per_worker):
                response = client.get(url)
                assert response.status_code == 200, response.text

    threads = [threading.Thread(target=work) for _ in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_worker * workers / (time.perf_counter() - start)


def raw_rps(url: str, headers: dict[str, str], conns: int, seconds: float) -> float:
    """Requests/s from ``conns`` raw keep-alive connections in a separate process."""
    import subprocess
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    extra = "".join(f"{k}: {v}|" for k, v in headers.items())
    done = subprocess.run([sys.executable, "-c", LOAD, parts.hostname or "", str(parts.port or 80), extra,
                           str(conns), str(seconds)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(requests: int, workers: int, seconds: float) -> None:
    from e2b import Sandbox

    sbx = Sandbox.create(timeout=600)
    try:
        sbx.files.write("/home/user/bench_server.py", SERVER)
        sbx.commands.run("python3 /home/user/bench_server.py", background=True)
        sbx.commands.run(f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{PORT}) 2>/dev/null && exit 0; sleep 0.1; done")
        ip = sbx.commands.run("hostname -I").stdout.split()[0]
        front = os.environ["E2B_SANDBOX_URL"].rstrip("/")
        routes = {
            "direct (sandbox IP)": (f"http://{ip}:{PORT}/", {}),
            "front door (headers)": (f"{front}/", {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(PORT)}),
        }
        print(f"{'':22} {'p50 ms':>8} {'p95 ms':>8} {'seq req/s':>10} {f'{workers}x req/s':>10} "
              f"{f'raw {workers}x req/s':>15}")
        results = {}
        for name, (url, headers) in routes.items():
            lat = sequential(url, headers, requests)
            rps = concurrent(url, headers, requests, workers)
            raw = raw_rps(url, headers, workers, seconds)
            results[name] = pct(lat, 0.5)
            print(f"{name:22} {pct(lat, 0.5):8.2f} {pct(lat, 0.95):8.2f} "
                  f"{1000 / statistics.fmean(lat):10.0f} {rps:10.0f} {raw:15.0f}")
        direct, front = results.values()
        print(f"front door overhead (p50): {front - direct:+.2f} ms per request; floor = the direct row, same run")
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the raw-socket req/s run")
    args = parser.parse_args()
    with_server(lambda: run(args.requests, args.concurrency, args.seconds))


if __name__ == "__main__":
    main()
