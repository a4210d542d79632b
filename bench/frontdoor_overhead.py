"""Front-door overhead: the same HTTP server in a sandbox, reached directly and through Sandlot.

Usage (as root, after `make setup`):
    .venv/bin/python bench/frontdoor_overhead.py [--requests 2000] [--concurrency 8]

Starts its own `sandlot serve` on loopback unless E2B_API_URL is set. Inside one sandbox a
keep-alive HTTP/1.1 server answers a 64-byte body; the host then sends the same requests to
the sandbox IP directly and to the front door (E2b-Sandbox-Id/Port headers), in the same run,
sequentially (p50/p95 latency) and with N concurrent keep-alive clients (requests/s).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16               # headers and body in one segment (no Nagle/delayed-ACK stall)
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b"x" * 64
        self.send_response(200); self.send_header("Content-Length", "64"); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("0.0.0.0", {PORT}), H).serve_forever()
"""


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


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(requests: int, workers: int) -> None:
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
        print(f"{'':22} {'p50 ms':>8} {'p95 ms':>8} {'seq req/s':>10} {f'{workers}x req/s':>10}")
        for name, (url, headers) in routes.items():
            lat = sequential(url, headers, requests)
            rps = concurrent(url, headers, requests, workers)
            print(f"{name:22} {pct(lat, 0.5):8.2f} {pct(lat, 0.95):8.2f} "
                  f"{1000 / statistics.fmean(lat):10.0f} {rps:10.0f}")
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with_server(lambda: run(args.requests, args.concurrency))


if __name__ == "__main__":
    main()
