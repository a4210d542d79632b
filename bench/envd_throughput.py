"""Upload/download MB/s through a bare envd (host subprocess) with the real e2b SDK.

Run: .venv/bin/python bench/envd_throughput.py
"""

from __future__ import annotations

import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.envd.conftest import Envd


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:8.1f} MB/s"


def main() -> None:
    envd = Envd({"defaultUser": "root"})
    sbx = envd.sandbox()
    try:
        for size in (1 << 20, 100 << 20):
            data = os.urandom(size)
            path = f"/tmp/envd-bench-{size}"
            reps = 20 if size == 1 << 20 else 3
            for label, kw in (("multipart", {}), ("octet", {"use_octet_stream": True})):
                t0 = time.perf_counter()
                for _ in range(reps):
                    sbx.files.write(path, io.BytesIO(data) if kw else data, request_timeout=300)
                print(f"upload   {size >> 20:4d} MiB {label:9s} {_rate(size * reps, time.perf_counter() - t0)}")
            for label, kw in (("bytes", {"format": "bytes"}), ("stream", {"format": "stream"})):
                t0 = time.perf_counter()
                for _ in range(reps):
                    out = sbx.files.read(path, request_timeout=300, **kw)
                    n = len(out) if kw["format"] == "bytes" else sum(len(c) for c in out)
                    assert n == size
                print(f"download {size >> 20:4d} MiB {label:9s} {_rate(size * reps, time.perf_counter() - t0)}")
            os.unlink(path)
        print(f"envd RSS after: {envd.rss_kib()} KiB")
    finally:
        envd.stop()


if __name__ == "__main__":
    main()
