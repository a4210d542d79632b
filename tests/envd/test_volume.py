"""Load: many concurrent processes, and big outputs with envd memory staying bounded."""

from __future__ import annotations

import threading
import time

import pytest


def test_50_concurrent_background_commands(sbx):
    handles = [sbx.commands.run(f"sleep 0.$((RANDOM % 5)); seq 1 {i}; echo err{i} >&2", background=True)
               for i in range(1, 56)]
    pids = {h.pid for h in handles}
    assert len(pids) == 55
    for i, h in enumerate(handles, start=1):
        r = h.wait()
        assert r.exit_code == 0
        assert r.stdout == "".join(f"{n}\n" for n in range(1, i + 1))
        assert r.stderr == f"err{i}\n"


async def test_50_concurrent_async_commands(asbx):
    import asyncio

    results = await asyncio.gather(*(asbx.commands.run(f"echo n{i}; sleep 0.2") for i in range(50)))
    assert [r.stdout for r in results] == [f"n{i}\n" for i in range(50)]


class PeakRss:
    def __init__(self, envd) -> None:
        self.envd = envd
        self.before = envd.rss_kib()
        self.peak = self.before
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.envd.rss_kib())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / 1024


@pytest.mark.slow
def test_200mb_stdout_streams_with_bounded_memory(sbx, envd):
    sbx.commands.run("true")  # warm up code paths before the baseline
    got = [0]

    def count(chunk: str) -> None:
        got[0] += len(chunk)

    t0 = time.monotonic()
    with PeakRss(envd) as rss:
        r = sbx.commands.run("head -c 200000000 /dev/zero | base64 -w 0", on_stdout=count, timeout=300)
    elapsed = time.monotonic() - t0
    print(f"200 MB → {got[0] / 1e6:.0f} MB stdout in {elapsed:.1f}s; envd RSS {rss.before} → peak {rss.peak} KiB")
    assert got[0] == len(r.stdout) == 266_666_668
    assert rss.growth_mib < 25


@pytest.mark.slow
def test_unread_output_applies_backpressure(sbx, envd):
    """A client that stops reading must stall the producer, not grow envd."""
    with PeakRss(envd) as rss:
        h = sbx.commands.run("head -c 150000000 /dev/zero; echo done >&2", background=True)
        time.sleep(3)  # nobody reads the stream meanwhile
        assert h.pid in [p.pid for p in sbx.commands.list()]  # blocked on a full pipe
        n = [0]
        r = h.wait(on_stdout=lambda s: n.__setitem__(0, n[0] + len(s)))
    print(f"unread 150 MB: envd RSS {rss.before} → peak {rss.peak} KiB")
    assert r.stderr == "done\n" and len(r.stdout) == 150_000_000
    assert rss.growth_mib < 25
