"""Density: N idle sandboxes alive at once, what each costs the host, and teardown time.

For N sandboxes created with the unmodified ``e2b`` SDK (concurrently, ``--batch`` at a
time) and left idle, it prints:

* host memory per sandbox: the ``MemAvailable`` drop over N (everything: envd, the
  kernel's per-netns/per-cgroup/per-ext4 memory, page cache) and the ``/proc/meminfo``
  lines that moved;
* per-sandbox cgroup v1 charges (``memory.usage_in_bytes``, ``total_rss``/``total_cache``,
  ``memory.kmem.usage_in_bytes``) and envd's RSS/PSS/USS from ``/proc/<pid>/smaps_rollup``
  (RSS counts the shared, read-only envd runtime in full; PSS splits it; USS is the
  marginal cost of one more envd);
* the ``/proc/slabinfo`` caches that grew most (the kernel side of a sandbox);
* every sandbox answering ``commands.run("true")``, with latency percentiles;
* teardown (``kill()`` of all N, ``--batch`` at a time) and what memory came back.

The floor, measured in the same run before the server starts: N bare ``runc run -d``
containers of the base template's rootfs running ``sleep`` (own pid/net/mount/ipc/uts
namespaces and cgroup, no envd, no disk image, no lxcfs), measured the same way.

Usage (as root, after ``make setup``; starts its own ``sandlot serve``, own instance):
    .venv/bin/python bench/density.py [--count 100] [--batch 8] [--no-floor]

MemAvailable is host-wide: other work on the box moves it, so read it beside the cgroup sums.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_server import with_server
from sandlot.settings import Settings
from sandlot.templates.base import base_rootfs_path

MEM_CGROUP = Path("/sys/fs/cgroup/memory")
DATA_DIR = Settings().data_dir
"""``SANDLOT_DATA_DIR`` or the default, as the server the bench starts uses."""
RUNTIME_ROOT = DATA_DIR / "runtime"
BASE_ROOTFS = base_rootfs_path(DATA_DIR / "templates" / "base")
"""The current recipe's base rootfs (the floor's containers run on what sandboxes do)."""
MEMINFO_KEYS = ("MemAvailable", "MemFree", "AnonPages", "Cached", "Buffers", "Shmem", "Slab",
                "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "Percpu", "Mapped")
MiB = 1024 * 1024
T = TypeVar("T")


# --- host readings ---------------------------------------------------------------------

def meminfo() -> dict[str, int]:
    """Bytes of /proc/meminfo's lines."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        out[key] = int(fields[0]) * 1024 if fields else 0
    return out


def slabinfo() -> dict[str, int]:
    """Bytes held per slab cache (num_objs × objsize)."""
    out = {}
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        out[f[0]] = int(f[2]) * int(f[3])
    return out


def settle() -> tuple[dict[str, int], dict[str, int]]:
    """Readings after dropping nothing: just let deferred frees (RCU, workqueues) run."""
    time.sleep(3)
    return meminfo(), slabinfo()


def smaps_rollup(pid: int) -> dict[str, int]:
    """Bytes of /proc/<pid>/smaps_rollup."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[-1] == "kB":
            out[key.strip()] = int(fields[0]) * 1024
    return out


def cgroup_charge(directory: Path) -> dict[str, int]:
    """A memory cgroup's usage, kernel memory and rss/cache split, in bytes."""
    stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    kmem = directory / "memory.kmem.usage_in_bytes"
    return {
        "usage": int((directory / "memory.usage_in_bytes").read_text()),
        "kmem": int(kmem.read_text()) if kmem.exists() else 0,
        "rss": int(stat["total_rss"]),
        "cache": int(stat["total_cache"]),
        "shmem": int(stat.get("total_shmem", 0)),
    }


def server_uss() -> int:
    """Private bytes of the server and every host process it started (they inherit its
    ``SANDLOT_PORT``): the host-side, per-sandbox state outside the sandboxes' cgroups."""
    port = os.environ["E2B_API_URL"].rsplit(":", 1)[-1].rstrip("/")
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"SANDLOT_PORT={port}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                rollup = smaps_rollup(int(proc.name))
                total += rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
        except OSError:
            continue
    return total


def sandbox_cgroup(sandbox_id: str) -> Path:
    for d in MEM_CGROUP.glob(f"*/{sandbox_id}"):
        return d
    raise RuntimeError(f"no memory cgroup for {sandbox_id}")


def envd_pid(sandbox_id: str) -> int:
    for pidfile in RUNTIME_ROOT.glob(f"*/sandboxes/{sandbox_id}/init.pid"):
        return int(pidfile.read_text())
    raise RuntimeError(f"no init.pid for {sandbox_id}")


# --- printing --------------------------------------------------------------------------

def pct(values: list[float], unit: str, scale: float = 1.0) -> str:
    ordered = sorted(v / scale for v in values)
    if not ordered:
        return "n=0"

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return (f"p50 {pick(0.5):7.1f}  p95 {pick(0.95):7.1f}  p99 {pick(0.99):7.1f}  "
            f"max {ordered[-1]:7.1f} {unit}  (n={len(ordered)})")


def meminfo_delta(label: str, before: dict[str, int], after: dict[str, int], count: int) -> float:
    """Print the per-item change of the meminfo lines; return MemAvailable's drop per item in MiB."""
    per = (before["MemAvailable"] - after["MemAvailable"]) / count / MiB
    print(f"  {label}: MemAvailable drop {per:6.2f} MiB per item "
          f"({(before['MemAvailable'] - after['MemAvailable']) / MiB:.0f} MiB for {count})")
    moved = [(k, (after[k] - before[k]) / count / MiB) for k in MEMINFO_KEYS if k != "MemAvailable" and k in after]
    print("    per item: " + "  ".join(f"{k} {v:+.2f}" for k, v in moved if abs(v) >= 0.05))
    return per


def slab_delta(before: dict[str, int], after: dict[str, int], count: int, top: int = 12) -> None:
    grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)[:top]
    print("    slab caches grown most, KiB per item: "
          + ", ".join(f"{name} {delta / count / 1024:.0f}" for delta, name in grown if delta > 0))


def run_bounded(fn: Callable[[Any], T], items: Iterable[Any], batch: int) -> list[tuple[float, T | BaseException]]:
    """``fn`` over ``items`` with ``batch`` threads; (seconds, result or exception) per item, in order."""
    def timed(item: Any) -> tuple[float, T | BaseException]:
        start = time.perf_counter()
        try:
            result: T | BaseException = fn(item)
        except Exception as exc:   # counted and printed; the bench goes on
            result = exc
        return time.perf_counter() - start, result

    with ThreadPoolExecutor(max_workers=batch) as pool:
        return list(pool.map(timed, items))


# --- the floor: bare runc containers running sleep --------------------------------------

def floor(count: int, batch: int) -> float | None:
    if not BASE_ROOTFS.is_dir() or shutil.which("runc") is None:
        print("floor: skipped (no base template rootfs or runc)")
        return None
    tag = f"density{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="sandlot-density-floor-") as tmp:
        state = Path(tmp, "runc")
        bundle = Path(tmp, "bundle")
        bundle.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(BASE_ROOTFS), "readonly": True}
        config["process"].update(terminal=False, args=["sleep", "infinity"])
        ids = [f"{tag}-{i}" for i in range(count)]

        def start(cid: str) -> None:
            own = Path(tmp, cid)
            own.mkdir()
            cfg = json.loads(json.dumps(config))
            cfg["linux"]["cgroupsPath"] = f"/{tag}/{cid}"
            (own / "config.json").write_text(json.dumps(cfg))
            subprocess.run(["runc", "--root", str(state), "run", "-d", "--bundle", str(own), cid],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)   # -d: sleep would hold a pipe open forever

        before, slab_before = settle()
        started = run_bounded(start, ids, batch)
        failures = [r for _, r in started if isinstance(r, BaseException)]
        alive = count - len(failures)
        after, slab_after = settle()
        print(f"\nFLOOR: {alive}/{count} bare `runc run -d` containers of the base rootfs running sleep"
              + (f" ({len(failures)} failed: {failures[0]!r})" if failures else ""))
        print(f"  start (runc run -d), {batch} at a time: {pct([s * 1000 for s, _ in started], 'ms')}")
        per = meminfo_delta("host", before, after, max(alive, 1))
        slab_delta(slab_before, slab_after, max(alive, 1))
        charges = [cgroup_charge(d) for d in MEM_CGROUP.glob(f"{tag}/*") if d.is_dir()]
        if charges:
            print(f"  cgroup usage_in_bytes     {pct([c['usage'] for c in charges], 'MiB', MiB)}")
            print(f"  cgroup kmem               {pct([c['kmem'] for c in charges], 'MiB', MiB)}")

        def stop(cid: str) -> None:
            subprocess.run(["runc", "--root", str(state), "delete", "-f", cid], capture_output=True)

        t0 = time.perf_counter()
        run_bounded(stop, ids, batch)
        print(f"  teardown (runc delete -f) of {count}: {time.perf_counter() - t0:.1f} s")
        for d in MEM_CGROUP.parent.glob(f"*/{tag}"):   # runc leaves the parent dirs
            try:
                d.rmdir()
            except OSError:
                pass   # a symlinked hierarchy (cpu -> cpu,cpuacct) already removed
        return per


# --- the sandboxes -----------------------------------------------------------------------

def sandboxes(count: int, batch: int, idle_s: float, floor_mib: float | None) -> None:
    from e2b import Sandbox

    time.sleep(5)   # the server's warm pool boots at start; let it finish before the baseline
    before, slab_before = settle()
    server_before = server_uss()
    t0 = time.perf_counter()
    created = run_bounded(lambda _: Sandbox.create(timeout=3600), range(count), batch)
    create_wall = time.perf_counter() - t0
    live = [r for _, r in created if isinstance(r, Sandbox)]
    failures = [r for _, r in created if not isinstance(r, Sandbox)]
    print(f"\nSANDBOXES: {len(live)}/{count} created with the e2b SDK, {batch} at a time, "
          f"in {create_wall:.1f} s ({len(live) / create_wall:.1f}/s)"
          + (f"; {len(failures)} failed, first: {failures[0]!r}" if failures else ""))
    print(f"  Sandbox.create()          {pct([s * 1000 for s, r in created if isinstance(r, Sandbox)], 'ms')}")
    try:
        time.sleep(idle_s)
        after, slab_after = settle()
        per = meminfo_delta("host", before, after, max(len(live), 1))
        slab_delta(slab_before, slab_after, max(len(live), 1))
        print(f"  server + its host processes, USS growth: "
              f"{(server_uss() - server_before) / max(len(live), 1) / MiB:.2f} MiB per sandbox")
        charges, rollups = [], []
        for sbx in live:
            try:
                charges.append(cgroup_charge(sandbox_cgroup(sbx.sandbox_id)))
                rollups.append(smaps_rollup(envd_pid(sbx.sandbox_id)))
            except (OSError, RuntimeError) as exc:
                print(f"  {sbx.sandbox_id}: unreadable ({exc})")
        print(f"  cgroup usage_in_bytes     {pct([c['usage'] for c in charges], 'MiB', MiB)}")
        print(f"  cgroup total_rss (anon)   {pct([c['rss'] for c in charges], 'MiB', MiB)}")
        print(f"  cgroup total_cache        {pct([c['cache'] for c in charges], 'MiB', MiB)}")
        print(f"  cgroup kmem               {pct([c['kmem'] for c in charges], 'MiB', MiB)}")
        print(f"  envd RSS                  {pct([r['Rss'] for r in rollups], 'MiB', MiB)}")
        print(f"  envd PSS                  {pct([r['Pss'] for r in rollups], 'MiB', MiB)}")
        print(f"  envd USS (private)        "
              f"{pct([r.get('Private_Clean', 0) + r.get('Private_Dirty', 0) for r in rollups], 'MiB', MiB)}")
        if charges:
            print(f"  sum of cgroup usage / N   {sum(c['usage'] for c in charges) / len(charges) / MiB:.2f} MiB")

        answered = run_bounded(lambda s: s.commands.run("true"), live, batch)
        bad = [r for _, r in answered if isinstance(r, BaseException) or getattr(r, "exit_code", 1) != 0]
        print(f"  commands.run('true'), all {len(live)}: {len(live) - len(bad)} answered"
              + (f", {len(bad)} did not, first: {bad[0]!r}" if bad else ""))
        print(f"  commands.run('true')      {pct([s * 1000 for s, _ in answered], 'ms')}")
        print(f"\nRESULT: {len(live)} idle sandboxes, {per:.2f} MiB host memory each (MemAvailable); "
              f"floor (bare runc + sleep, same N): "
              + (f"{floor_mib:.2f} MiB each" if floor_mib is not None else "not measured"))
    finally:
        t0 = time.perf_counter()
        killed = run_bounded(lambda s: s.kill(), live, batch)
        wall = time.perf_counter() - t0
        print(f"  teardown: {len(live)} kill()s, {batch} at a time, in {wall:.1f} s; "
              f"per kill {pct([s * 1000 for s, _ in killed], 'ms')}")
        back, _ = settle()
        print(f"  after teardown, MemAvailable vs before create: "
              f"{(back['MemAvailable'] - before['MemAvailable']) / MiB:+.0f} MiB")


def subnet_for(count: int) -> str:
    """A sandbox subnet with room for ``count`` (+ pool) /30 slots, in this process's 10.X."""
    from tests.e2e.server import _process_octet

    return f"10.{_process_octet()}.0.0/18" if count > 200 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="idle sandboxes alive at once")
    parser.add_argument("--batch", type=int, default=8, help="creates/commands/kills in flight at once")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle time before measuring")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-runc floor")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it reads the sandboxes' /proc and cgroup files and runs runc")
    print(f"density: N={args.count}, batch={args.batch}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    floor_mib = None if args.no_floor else floor(args.count, args.batch)
    subnet = subnet_for(args.count)
    env = {"SANDLOT_SANDBOX_SUBNET": subnet} if subnet else {}
    with_server(lambda: sandboxes(args.count, args.batch, args.idle_s, floor_mib), extra_env=env)


if __name__ == "__main__":
    main()
