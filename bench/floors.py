"""Floors the create and pause benches print beside their results, measured in the same run.

* ``runc_run``: a bare ``runc run`` of the base template's rootfs running ``/bin/true`` (create,
  start, exit, delete: no overlay, disk, netns, envd or API) — what the create path can't beat.
* ``criu_dump_restore``: ``criu dump`` and ``criu restore`` of a trivial process (``sleep``) with
  the images on the data dir's file system, as pause images are — what pause/resume can't beat.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sandlot.settings import Settings
from sandlot.templates.base import base_rootfs_path

CRIU = "/usr/local/sbin/criu"


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def runc_run(runs: int) -> float | None:
    """p50 ms of a bare ``runc run`` (foreground, ``/bin/true``) of the base rootfs."""
    rootfs = base_rootfs_path(Settings().data_dir / "templates" / "base")
    if not rootfs.is_dir() or shutil.which("runc") is None:
        print("floor: skipped (no base template rootfs or runc)")
        return None
    samples = []
    with tempfile.TemporaryDirectory(prefix="sandlot-floor-") as tmp:
        state, bundle = Path(tmp, "runc"), Path(tmp, "bundle")
        bundle.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(rootfs), "readonly": True}
        config["process"].update(terminal=False, args=["/bin/true"])
        config["linux"]["cgroupsPath"] = f"/sandlot-floor-{os.getpid()}/c"
        (bundle / "config.json").write_text(json.dumps(config))
        for i in range(runs):
            t0 = time.perf_counter()
            subprocess.run(["runc", "--root", str(state), "run", "--bundle", str(bundle), f"floor{i}"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            samples.append((time.perf_counter() - t0) * 1000)
    for d in Path("/sys/fs/cgroup").glob(f"*/sandlot-floor-{os.getpid()}"):
        for child in d.glob("*/"):
            child.rmdir()
        try:
            d.rmdir()
        except OSError:
            pass   # a symlinked hierarchy (cpu -> cpu,cpuacct), already gone
    ms = _p50(samples)
    print(f"FLOOR bare `runc run` of the base rootfs (/bin/true), n={runs}: p50 {ms:.1f} ms")
    return ms


def criu_dump_restore(runs: int) -> tuple[float, float] | None:
    """p50 ms of ``criu dump`` and of ``criu restore`` of a ``sleep`` (images on the data dir's fs)."""
    if not Path(CRIU).is_file():
        print("floor: skipped (no CRIU at /usr/local/sbin/criu)")
        return None
    data_dir = Settings().data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    dumps, restores = [], []
    with tempfile.TemporaryDirectory(prefix="criu-floor-", dir=data_dir) as tmp:
        for i in range(runs):   # a fresh process each time: a dumped one is gone, a restored one not ours
            proc = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(0.05)
            images = Path(tmp, f"img{i}")
            images.mkdir()
            t0 = time.perf_counter()
            subprocess.run([CRIU, "dump", "-t", str(proc.pid), "-D", str(images), "-o", "dump.log"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            dumps.append((time.perf_counter() - t0) * 1000)
            proc.wait(timeout=10)
            t0 = time.perf_counter()
            subprocess.run([CRIU, "restore", "-d", "-D", str(images), "-o", "restore.log"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            restores.append((time.perf_counter() - t0) * 1000)
            try:
                os.kill(proc.pid, signal.SIGKILL)   # the restored process has the same pid
            except ProcessLookupError:
                pass
    result = _p50(dumps), _p50(restores)
    print(f"FLOOR criu dump / restore of a sleep process, n={runs}: p50 {result[0]:.1f} / {result[1]:.1f} ms")
    return result
