"""What an idle sandbox costs in host memory: envd's RSS, PSS and private (USS) memory,
and the sandbox cgroup's charge.

RSS counts envd's runtime (libpython, shared libraries, the read-only bind-mounted
envd tree) in full for every sandbox, but those pages are one copy in the page cache
shared by all sandboxes; PSS splits them among their users and USS leaves them out, so
USS is the marginal cost of one more sandbox.

Usage (as root, after `make setup`; starts its own `sandlot serve`):
    .venv/bin/python bench/sandbox_memory.py [--sandboxes 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_server import with_server

SANDBOXES_ROOT = Path("/var/lib/sandlot/runtime")


def _smaps_rollup(pid: int) -> dict[str, int]:
    """KiB values of /proc/<pid>/smaps_rollup."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[-1] == "kB":
            out[key.strip()] = int(fields[0])
    return out


def _envd_pid(sandbox_id: str) -> int:
    for pidfile in SANDBOXES_ROOT.glob(f"*/sandboxes/{sandbox_id}/init.pid"):
        return int(pidfile.read_text())
    raise RuntimeError(f"no init.pid for {sandbox_id}")


def _cgroup_charge_kib(sandbox_id: str) -> int | None:
    for stat in Path("/sys/fs/cgroup/memory").glob(f"*/{sandbox_id}/memory.stat"):
        values = dict(line.split() for line in stat.read_text().splitlines())
        return (int(values["total_rss"]) + int(values.get("total_shmem", 0))) // 1024
    return None


def _summary(name: str, values: list[int]) -> str:
    return f"{name:<28} p50 {statistics.median(values) / 1024:6.1f} MiB  max {max(values) / 1024:6.1f} MiB"


def run(count: int) -> None:
    from e2b import Sandbox

    sandboxes = [Sandbox.create(timeout=300) for _ in range(count)]
    try:
        for sbx in sandboxes:   # one command each, like an agent's first call
            sbx.commands.run("true")
        time.sleep(2)
        rows = []
        for sbx in sandboxes:
            rollup = _smaps_rollup(_envd_pid(sbx.sandbox_id))
            uss = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
            rows.append((rollup["Rss"], rollup["Pss"], uss, _cgroup_charge_kib(sbx.sandbox_id) or 0))
        print(f"{count} idle sandboxes, envd after one command:")
        for index, name in enumerate(("envd RSS", "envd PSS", "envd USS (private)",
                                      "cgroup anon+shmem charge")):
            print(_summary(name, [row[index] for row in rows]))
    finally:
        for sbx in sandboxes:
            sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it reads the sandboxes' /proc and cgroup files")
    with_server(lambda: run(args.sandboxes))


if __name__ == "__main__":
    main()
