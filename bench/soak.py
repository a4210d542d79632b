"""Soak and fault bench (issue 12): mixed real-SDK traffic with injected faults, checking invariants.

Usage (as root, after `make setup`):
    .venv/bin/python bench/soak.py --minutes 3 [--workers 2] [--faults all|none|kill,criu,disk,lxcfs] [--seed 1]

Starts its own `sandlot serve` (own instance prefix, subnet, database and data dir) and drives it
with the unmodified ``e2b`` SDK from ``--workers`` threads: create, commands, files, pause/resume,
snapshot (+ create from it), fork, kill and template builds. A fault thread meanwhile, at seeded
random times, injects one of:

``kill``   ``kill -9`` of the server while an operation is in flight, then a restart;
``criu``   CRIU failing: every dump/restore fails for a while (a wrapper at ``SANDLOT_CRIU_PATH``),
           or the server restarted with no CRIU at all (pause/snapshot/fork → 503);
``disk``   the data dir's filesystem full: the data dir is a loop-mounted ext4 of its own (a
           sparse file in the temp dir) and a ballast file takes all its free space — the host's
           disk is never filled; skipped when ``SANDLOT_DATA_DIR`` names a data dir not ours;
``lxcfs``  ``kill -9`` of the data dir's lxcfs daemon.

Invariants (any broken one → exit status 1):
- every error answer of the API is JSON ``{"code": int, "message": str}`` with ``code`` = the
  HTTP status, and no 5xx but 502/503/507 (500 only for a pause/resume/snapshot/fork while
  CRIU is made to fail, where it is the documented "CRIU failed, the sandbox keeps running");
  envd's own answers (through the front door) must be JSON with a message (their 5xx are
  the sandbox's and counted as findings);
- after every fault, a new sandbox is created and works (reads its lxcfs ``/proc/meminfo``,
  writes a file) within 90 s;
- no paused sandbox is lost: every pause that answered 204 stays listed as paused through
  restarts, and resumes with the file written before the pause;
- nothing leaks after the final ``sandlot reset``: no mount under the data dir or the runtime
  state dir, no cgroup dir under the instance's parent, no netns or link with the instance
  prefix, no process with the data dir in its command line, no loop device on its files;
- p99 latency of every successful operation under its bound (``BOUNDS_MS``; a bound on hanging,
  not a performance target: the numbers are printed beside the floor measured in the same run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAULTS = ("kill", "criu", "disk", "lxcfs")
BOUNDS_MS = {
    "cmd": 15_000, "floor": 15_000, "files": 15_000, "create": 90_000, "kill": 60_000,
    "pause": 90_000, "resume": 90_000, "snapshot": 90_000, "from_snapshot": 90_000,
    "fork": 120_000, "build": 600_000,
}
"""p99 bounds per operation: generous on a shared 2-core machine, they catch hangs, not slowness."""
CRIU_OPS = {"pause", "resume", "snapshot", "fork", "from_snapshot"}
DOCUMENTED_5XX = {502, 503, 507}
SEED_DIRS = ("templates/base", "envd")
"""What a fresh data dir needs so the server doesn't rebuild the base images (minutes of CPU)."""
DISK_MB = 6144


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- shared state

@dataclass
class Soak:
    """Everything the workers, the fault thread and the checks share."""

    url: str = ""
    api_key: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock)
    faults: set[str] = field(default_factory=set)
    """Faults in effect now (``down`` while the server is dead or restarting)."""
    fault_log: list[tuple[float, str, str]] = field(default_factory=list)
    in_flight: Counter = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    violations: dict[str, list] = field(default_factory=dict)
    findings: dict[str, list] = field(default_factory=dict)
    """Message kind (ids and numbers blanked) → [first message, count]."""
    paused: dict[str, str] = field(default_factory=dict)
    """Sandboxes whose pause answered 204 → the token in their marker file."""
    owned: dict[str, str] = field(default_factory=dict)
    """Every sandbox the soak created (and may still exist) → its token."""
    busy: set[str] = field(default_factory=set)
    """Sandboxes with a resume in flight: their state is the server's to decide meanwhile."""
    snapshots: set[str] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)
    rss_peak_kb: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def _note(book: dict[str, list], msg: str) -> bool:
        kind = re.sub(r"[a-z0-9]{18,}|\d+", "#", msg)[:160]
        if kind in book:
            book[kind][1] += 1
            return False
        book[kind] = [msg, 1]
        return True

    def violate(self, msg: str) -> None:
        with self.lock:
            if self._note(self.violations, msg):
                log(f"VIOLATION {msg}")

    def find(self, msg: str) -> None:
        with self.lock:
            if self._note(self.findings, msg):
                log(f"finding: {msg}")

    def faults_now(self) -> frozenset[str]:
        with self.lock:
            return frozenset(self.faults)

    def faults_since(self, start: int) -> frozenset[str]:
        """Faults in effect now or switched on since event ``start`` (``len(fault_log)`` then):
        an operation that overlapped a fault is judged as under it."""
        with self.lock:
            return frozenset(self.faults) | {name for _, name, what in self.fault_log[start:] if what == "on"}

    def set_fault(self, name: str, on: bool) -> None:
        with self.lock:
            (self.faults.add if on else self.faults.discard)(name)
            self.fault_log.append((time.time(), name, "on" if on else "off"))


SOAK = Soak()
_tls = threading.local()


# --------------------------------------------------------------------------- every HTTP answer

_ID_SEGMENT = re.compile(r"^[a-z0-9]{16,}$|^[0-9a-f-]{20,}$|^[a-z0-9]+_[a-z0-9_]+$")


def _route(path: str) -> str:
    return "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))


def observe(request: httpx.Request, response: httpx.Response) -> None:
    """Check one answer of our server: error bodies E2B-shaped, 5xx only the documented ones."""
    if f"{request.url.host}:{request.url.port}" not in SOAK.url:
        return
    status = response.status_code
    envd = "e2b-sandbox-id" in request.headers or request.url.path.startswith(("/files", "/process.", "/filesystem."))
    route = ("envd " if envd else "") + f"{request.method} {_route(request.url.path)}"
    op = getattr(_tls, "op", "?")
    faults = SOAK.faults_since(getattr(_tls, "since", len(SOAK.fault_log)))
    with SOAK.lock:
        SOAK.statuses[f"{status} {route}"] += 1
    if status < 400:
        return
    try:
        response.read()
        body = json.loads(response.content or b"null")
    except Exception:
        body = None
    text = (response.content or b"")[:300].decode(errors="replace")
    if not envd:
        if not (isinstance(body, dict) and body.get("code") == status and isinstance(body.get("message"), str)):
            SOAK.violate(f"malformed error answer: {route} → {status} {text!r} (op {op})")
    elif not (isinstance(body, dict) and isinstance(body.get("message"), str) and "code" in body):
        SOAK.violate(f"malformed envd error answer: {route} → {status} {text!r} (op {op})")
    if envd and status >= 500 and status not in DOCUMENTED_5XX:
        # envd's answers are the sandbox's (E2B's envd answers 500 for e.g. EROFS as well)
        SOAK.find(f"envd answered {status}: {route} (op {op}, faults {sorted(faults)}): {text!r}")
    elif status >= 500 and status not in DOCUMENTED_5XX:
        expected = status == 500 and "criu" in faults and op in CRIU_OPS
        if not expected:
            SOAK.violate(f"{status} outside its documented meaning: {route} (op {op}, faults {sorted(faults)}): {text!r}")
        else:
            with SOAK.lock:
                SOAK.outcomes[f"500 under criu fault ({op})"] += 1
    if status == 507 and "disk" not in faults:
        SOAK.find(f"507 with no disk fault injected: {route} (op {op}): {text!r}")


def install_observer() -> None:
    original = httpx.Client.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs):  # type: ignore[no-untyped-def]
        response = original(self, request, **kwargs)
        try:
            observe(request, response)
        except Exception as exc:   # the observer must never break the SDK under test
            log(f"observer error: {exc!r}")
        return response

    httpx.Client.send = send  # type: ignore[method-assign]


def api(method: str, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    with httpx.Client(timeout=120) as client:
        return client.request(method, SOAK.url + path, headers={"X-API-Key": SOAK.api_key}, **kwargs)


# --------------------------------------------------------------------------- the workers

class Worker(threading.Thread):
    """Mixed operations on a few sandboxes of its own (≤2 running, ≤3 paused)."""

    def __init__(self, index: int, rng: random.Random, build: bool) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.index = index
        self.rng = rng
        self.build = build
        self.running: dict[str, object] = {}   # id → Sandbox
        self.paused: list[str] = []
        self.n = 0

    # -- plumbing
    def timed(self, op: str, fn):  # type: ignore[no-untyped-def]
        """Run one operation; record latency on success, classify a failure by the faults in effect."""
        _tls.op = op
        _tls.since = len(SOAK.fault_log)
        with SOAK.lock:
            SOAK.in_flight[op] += 1
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            faults = SOAK.faults_since(_tls.since)
            key = f"{op} failed ({type(exc).__name__})" + (f" under {'+'.join(sorted(faults))}" if faults else "")
            with SOAK.lock:
                SOAK.outcomes[key] += 1
            if not faults:
                SOAK.find(f"{op} failed with no fault injected: {type(exc).__name__}: {str(exc)[:300]}")
            raise
        finally:
            with SOAK.lock:
                SOAK.in_flight[op] -= 1
        ms = (time.perf_counter() - t0) * 1000
        with SOAK.lock:
            SOAK.outcomes[f"{op} ok"] += 1
            if not SOAK.faults_since(_tls.since):   # latency under no fault only
                SOAK.latencies[op].append(ms)
        return result

    def token(self) -> str:
        self.n += 1
        return f"w{self.index}-{self.n}-{self.rng.randrange(1 << 30):x}"

    # -- operations
    def op_create(self) -> None:
        from e2b import Sandbox

        sbx = self.timed("create", lambda: Sandbox.create(timeout=3600))
        tok = self.token()
        try:
            self.timed("files", lambda: sbx.files.write("/home/user/soak.txt", tok))
            # durable, as a careful user makes it: unflushed writes into a sparse disk image
            # are lost when the host's disk fills before writeback (docs/reliability.md)
            self.timed("files", lambda: sbx.commands.run("sync /home/user/soak.txt", timeout=60))
        except Exception:   # no marker, no use to the soak (e.g. written while the disk was full)
            with contextlib.suppress(Exception):
                sbx.kill()
            raise
        self.running[sbx.sandbox_id] = sbx
        with SOAK.lock:
            SOAK.owned[sbx.sandbox_id] = tok

    def pick(self):  # type: ignore[no-untyped-def]
        sid = self.rng.choice(sorted(self.running))
        return sid, self.running[sid]

    def op_cmd(self) -> None:
        sid, sbx = self.pick()
        res = self.timed("cmd", lambda: sbx.commands.run(
            "cat /home/user/soak.txt; echo; head -1 /proc/meminfo >/dev/null 2>&1 && echo meminfo-ok || echo meminfo-dead",
            timeout=60))
        lines = res.stdout.split()
        if not lines or lines[0] != SOAK.owned.get(sid):
            SOAK.violate(f"sandbox {sid} lost its marker file: {res.stdout[:100]!r}")
        if lines[-1:] == ["meminfo-dead"]:
            with SOAK.lock:
                SOAK.outcomes["cmd saw a dead /proc/meminfo (lxcfs)"] += 1

    def op_floor(self) -> None:
        _, sbx = self.pick()
        self.timed("floor", lambda: sbx.commands.run("true", timeout=60))
        res = sbx.commands.run("s=$(date +%s%N); bash -c true; e=$(date +%s%N); echo $(( (e-s)/1000 ))", timeout=60)
        with SOAK.lock:
            SOAK.latencies["in-sandbox bash -c true"].append(int(res.stdout.strip()) / 1000)

    def op_files(self) -> None:
        _, sbx = self.pick()
        data = os.urandom(self.rng.randrange(1, 256 * 1024))
        path = f"/tmp/soak-{self.rng.randrange(8)}.bin"
        self.timed("files", lambda: sbx.files.write(path, data))
        back = self.timed("files", lambda: sbx.files.read(path, format="bytes"))
        if bytes(back) != data:
            SOAK.violate(f"file read back differs ({len(back)} vs {len(data)} bytes)")

    def op_pause(self) -> None:
        sid, sbx = self.pick()
        del self.running[sid]   # whatever happens next, only the server knows its state now
        try:
            self.timed("pause", sbx.pause)
        except Exception:
            self.settle(sid)
            return
        self.paused.append(sid)
        with SOAK.lock:
            SOAK.paused[sid] = SOAK.owned.get(sid, "")

    def op_resume(self) -> None:
        from e2b import Sandbox

        sid = self.rng.choice(self.paused)
        with SOAK.lock:
            SOAK.busy.add(sid)
        try:
            sbx = self.timed("resume", lambda: Sandbox.connect(sid, timeout=3600))
        except Exception:
            self.settle(sid)
            return
        finally:
            with SOAK.lock:
                SOAK.busy.discard(sid)
        self.paused.remove(sid)
        with SOAK.lock:
            SOAK.paused.pop(sid, None)
        self.running[sid] = sbx
        got = self.timed("files", lambda: sbx.files.read("/home/user/soak.txt"))
        if got != SOAK.owned.get(sid):
            SOAK.violate(f"resumed sandbox {sid} lost its marker file: {got[:100]!r}")

    def settle(self, sid: str) -> None:
        """After a failed pause/resume: find where the sandbox is (running, paused or gone)."""
        from e2b import Sandbox

        _tls.op = "settle"
        _tls.since = len(SOAK.fault_log)

        for _ in range(60):
            if SOAK.stop.is_set():
                return
            try:
                r = api("GET", f"/sandboxes/{sid}")
            except httpx.HTTPError:
                time.sleep(2)
                continue
            if r.status_code == 404:
                if sid in SOAK.paused:
                    SOAK.violate(f"paused sandbox {sid} is gone (404) after a failed resume")
                with SOAK.lock:
                    SOAK.paused.pop(sid, None)
                    SOAK.owned.pop(sid, None)
                if sid in self.paused:
                    self.paused.remove(sid)
                return
            if r.status_code == 200:
                state = r.json().get("state")
                if state == "paused":
                    if sid not in self.paused:
                        self.paused.append(sid)
                    with SOAK.lock:
                        SOAK.paused[sid] = SOAK.owned.get(sid, "")
                    return
                if state == "running":
                    with contextlib.suppress(Exception):
                        self.running[sid] = Sandbox.connect(sid, timeout=3600)
                        if sid in self.paused:
                            self.paused.remove(sid)
                        with SOAK.lock:
                            SOAK.paused.pop(sid, None)
                        return
            time.sleep(2)
        SOAK.find(f"sandbox {sid}: no settled state after a failed pause/resume")

    def op_snapshot(self) -> None:
        from e2b import Sandbox

        sid, sbx = self.pick()
        snap = self.timed("snapshot", sbx.create_snapshot)
        with SOAK.lock:
            SOAK.snapshots.add(snap.snapshot_id)
        clone = self.timed("from_snapshot", lambda: Sandbox.create(snap.snapshot_id, timeout=120))
        try:
            got = self.timed("files", lambda: clone.files.read("/home/user/soak.txt"))
            if got != SOAK.owned.get(sid):
                SOAK.violate(f"sandbox from snapshot of {sid} lacks the marker: {got[:100]!r}")
        finally:
            self.timed("kill", clone.kill)
            self.timed("snapshot", lambda: Sandbox.delete_snapshot(snap.snapshot_id))
            with SOAK.lock:
                SOAK.snapshots.discard(snap.snapshot_id)

    def op_fork(self) -> None:
        sid, sbx = self.pick()
        forks = self.timed("fork", lambda: sbx.fork(count=1, timeout=120))
        for f in forks:
            if isinstance(f, Exception):
                SOAK.find(f"a fork of {sid} failed: {f!r}"[:300])
                continue
            try:
                got = self.timed("files", partial(f.files.read, "/home/user/soak.txt"))
                if got != SOAK.owned.get(sid):
                    SOAK.violate(f"fork of {sid} lacks the marker: {got[:100]!r}")
            finally:
                self.timed("kill", f.kill)

    def op_kill(self) -> None:
        sid, sbx = self.pick()
        del self.running[sid]
        self.timed("kill", sbx.kill)
        with SOAK.lock:
            SOAK.owned.pop(sid, None)

    def op_kill_paused(self) -> None:
        from e2b import Sandbox

        sid = self.paused.pop(0)
        with SOAK.lock:   # no longer guarded: whatever the kill's outcome, the end kills all
            SOAK.paused.pop(sid, None)
        self.timed("kill", lambda: Sandbox.kill(sid))
        with SOAK.lock:
            SOAK.owned.pop(sid, None)

    def op_build(self) -> None:
        from e2b import Sandbox, Template

        tag = self.token()
        name = f"soak-{tag}"
        tpl = Template().from_template("base").run_cmd(f"echo {tag} > /home/user/built.txt")
        info = self.timed("build", lambda: Template.build(tpl, name, cpu_count=1, memory_mb=512))
        with SOAK.lock:
            SOAK.templates.add(info.template_id)
        sbx = self.timed("create", lambda: Sandbox.create(name, timeout=120))
        try:
            got = self.timed("files", lambda: sbx.files.read("/home/user/built.txt"))
            if got.strip() != tag:
                SOAK.violate(f"sandbox of template {name} lacks its built file: {got[:100]!r}")
        finally:
            self.timed("kill", sbx.kill)
        r = api("DELETE", f"/templates/{info.template_id}")
        if r.status_code in (200, 204):
            with SOAK.lock:
                SOAK.templates.discard(info.template_id)

    def choose(self) -> str:
        if not self.running:
            return "create" if len(self.paused) < 3 or self.rng.random() < 0.3 else "resume"
        weights = {"cmd": 30, "files": 20, "floor": 8, "kill": 6, "snapshot": 4, "fork": 4}
        if len(self.running) < 2:
            weights["create"] = 10
        if len(self.paused) < 3:
            weights["pause"] = 10
        if self.paused:
            weights["resume"] = 10
        if len(self.paused) >= 3:
            weights["kill_paused"] = 3
        if self.build:
            weights["build"] = 1
        names = sorted(weights)
        return self.rng.choices(names, [weights[n] for n in names])[0]

    def run(self) -> None:
        while not SOAK.stop.is_set():
            if "down" in SOAK.faults_now():
                time.sleep(0.5)
                continue
            name = self.choose()
            try:
                getattr(self, f"op_{name}")()
            except Exception:
                # a running sandbox that stopped answering (the server died under it, its own
                # timeout…) is re-found on the next failure-free pass
                self.prune()
                time.sleep(self.rng.uniform(1, 3))
            time.sleep(self.rng.uniform(0.05, 0.4))

    def prune(self) -> None:
        """Drop running sandboxes the server no longer lists as running."""
        _tls.op = "prune"
        _tls.since = len(SOAK.fault_log)
        for sid in list(self.running):
            try:
                r = api("GET", f"/sandboxes/{sid}")
            except httpx.HTTPError:
                return
            if r.status_code == 404:
                self.running.pop(sid, None)
                with SOAK.lock:
                    SOAK.owned.pop(sid, None)
            elif r.status_code == 200 and r.json().get("state") == "paused":
                self.running.pop(sid, None)
                self.paused.append(sid)


# --------------------------------------------------------------------------- the host side

class Host:
    """The server under test, its data dir (a loop-mounted ext4 when it is ours) and the faults."""

    def __init__(self, workdir: Path, seed: int, faults: list[str]) -> None:
        from sandlot import ids
        from tests.e2e.server import Server, unique_instance, unique_subnet

        self.workdir = workdir
        self.rng = random.Random(seed ^ 0x5EED)
        self.faults = faults
        given = os.environ.get("SANDLOT_DATA_DIR")
        self.own_disk = not given
        self.data_dir = Path(given) if given else workdir / "data"
        self.criu_wrapper = workdir / "criu-wrapper"
        self.criu_fail_flag = workdir / "criu-fail"
        self.ballast = self.data_dir / "soak-ballast"
        self.server = Server(workdir=workdir, api_key=ids.new_api_key(), instance=unique_instance("k"),
                             subnet=unique_subnet(13),
                             extra_env={"SANDLOT_DATA_DIR": str(self.data_dir),
                                        "SANDLOT_DATABASE_URL": f"sqlite:///{self.data_dir / 'soak.db'}",
                                        "SANDLOT_QUOTA_CONCURRENT_SANDBOXES": "0",
                                        "SANDLOT_CRIU_PATH": str(self.criu_wrapper)})

    # -- set-up and tear-down
    def prepare(self) -> None:
        from sandlot.settings import Settings

        from sandlot.runtime.checkpoint import USERNS_PATCH_MARK

        real_criu = Settings.model_fields["criu_path"].default
        # the server looks for this mark in the binary to know CRIU can checkpoint a sandbox in
        # a user namespace: the wrapper execs that binary, so it carries the mark when it does
        mark = USERNS_PATCH_MARK.decode() if USERNS_PATCH_MARK in Path(real_criu).read_bytes() else ""
        self.criu_wrapper.write_text(
            f"#!/bin/sh\n# soak: CRIU fails every dump/restore while the flag file exists\n# {mark}\n"
            f'if [ -e {self.criu_fail_flag} ] && [ "$1" != check ] && [ "$1" != --version ]; then\n'
            '  echo "Error (soak): injected CRIU failure" >&2; exit 1\nfi\n'
            f'exec {real_criu} "$@"\n')
        self.criu_wrapper.chmod(0o755)
        if self.own_disk:
            image = self.workdir / "data.img"
            subprocess.run(["truncate", "-s", f"{DISK_MB}M", str(image)], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-m", "0", "-E", "lazy_itable_init=1,nodiscard", str(image)], check=True)
            self.data_dir.mkdir()
            subprocess.run(["mount", "-o", "loop,discard", str(image), str(self.data_dir)], check=True)
            source = Settings().data_dir   # SANDLOT_DATA_DIR or the default: where the base is built
            for rel in SEED_DIRS:
                if (source / rel).is_dir():
                    (self.data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    subprocess.run(["cp", "-a", str(source / rel), str(self.data_dir / rel)], check=True)

    def teardown(self) -> None:
        """Stop lxcfs and unmount the loop filesystem (after the leak checks)."""
        if not self.own_disk:
            return
        pid_file = self.data_dir / "lxcfs.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            time.sleep(0.5)
        subprocess.run(["umount", str(self.data_dir / "lxcfs")], capture_output=True)
        done = subprocess.run(["umount", str(self.data_dir)], capture_output=True, text=True)
        if done.returncode != 0:   # left mounted for a look (and a `sandlot reset`), never lazily detached
            log(f"umount {self.data_dir}: {done.stderr.strip()}: left mounted")
            return
        (self.workdir / "data.img").unlink(missing_ok=True)

    # -- the server
    def start(self) -> None:
        self.server.start()
        SOAK.url, SOAK.api_key = self.server.url, self.server.api_key

    def kill9(self) -> None:
        proc = self.server.process
        if proc is not None:
            proc.kill()
            proc.wait()
        self.server.process = None

    def server_pid(self) -> int | None:
        proc = self.server.process
        return proc.pid if proc is not None and proc.poll() is None else None

    def restart(self, env: dict[str, str] | None = None) -> float:
        t0 = time.perf_counter()
        if env:
            self.server.extra_env.update(env)
        self.start()
        return time.perf_counter() - t0

    # -- the faults
    def fault_kill(self) -> str:
        """``kill -9`` while something heavy is in flight (waited for up to 20 s)."""
        heavy = ("create", "pause", "resume", "snapshot", "fork", "from_snapshot", "build")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(SOAK.in_flight[op] > 0 for op in heavy):
            time.sleep(0.05)
        time.sleep(self.rng.uniform(0, 0.5))
        busy = sorted(op for op, n in SOAK.in_flight.items() if n > 0)
        SOAK.set_fault("down", True)
        self.kill9()
        before = dict(SOAK.paused)
        took = self.restart()
        SOAK.set_fault("down", False)
        check_paused(before, "after kill -9 + restart")
        check_no_stuck_states()
        return f"kill -9 during {busy or 'idle'}; restart took {took:.1f} s"

    def fault_criu(self, window_s: float) -> str:
        if self.rng.random() < 0.5:
            self.criu_fail_flag.touch()
            SOAK.set_fault("criu", True)
            time.sleep(window_s)
            self.criu_fail_flag.unlink()
            time.sleep(3)   # calls that started under the fault finish under it
            SOAK.set_fault("criu", False)
            return f"every CRIU dump/restore failed for {window_s:.0f} s"
        SOAK.set_fault("down", True)
        SOAK.set_fault("nocriu", True)   # CRIU absent: pause/snapshot/fork must answer 503, not 500
        self.server.stop()
        self.restart({"SANDLOT_CRIU_PATH": str(self.workdir / "no-such-criu")})
        SOAK.set_fault("down", False)
        time.sleep(window_s)
        SOAK.set_fault("down", True)
        self.server.stop()
        self.restart({"SANDLOT_CRIU_PATH": str(self.criu_wrapper)})
        SOAK.set_fault("down", False)
        SOAK.set_fault("nocriu", False)
        check_paused(dict(SOAK.paused), "after the CRIU-less server")
        return f"server restarted without CRIU for {window_s:.0f} s"

    def fault_disk(self, window_s: float) -> str:
        free = shutil.disk_usage(self.data_dir).free
        SOAK.set_fault("disk", True)
        subprocess.run(["fallocate", "-l", str(max(free - (1 << 20), 1 << 20)), str(self.ballast)], capture_output=True)
        with contextlib.suppress(OSError), open(self.ballast, "ab") as f:   # the last MiB, block by block
            while True:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        left = shutil.disk_usage(self.data_dir).free
        time.sleep(window_s)
        self.ballast.unlink()
        time.sleep(3)
        SOAK.set_fault("disk", False)
        return f"data dir's filesystem full ({left // 1024} KiB free) for {window_s:.0f} s"

    def fault_lxcfs(self) -> str:
        pid_file = self.data_dir / "lxcfs.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError) as exc:
            return f"lxcfs not killed: {exc}"
        SOAK.set_fault("lxcfs", True)   # until the recovery probe passes
        return f"lxcfs (pid {pid}) killed"

    def probe(self, name: str, limit_s: float = 90) -> str:
        """After a fault: how long until a new sandbox is created and reads its own /proc/meminfo
        (lxcfs's view) and a file; not within ``limit_s`` → the server didn't recover."""
        from e2b import Sandbox

        _tls.op = "probe"
        _tls.since = len(SOAK.fault_log)
        t0 = time.monotonic()
        last = ""
        while time.monotonic() - t0 < limit_s and not SOAK.stop.is_set():
            try:
                sbx = Sandbox.create(timeout=60)
                try:
                    res = sbx.commands.run("head -1 /proc/meminfo && echo ok > /tmp/probe && cat /tmp/probe", timeout=30)
                    if res.stdout.split()[-1:] == ["ok"] and "MemTotal" in res.stdout:
                        return f"recovered: a new sandbox works {time.monotonic() - t0:.1f} s after"
                    last = f"unexpected output {res.stdout[:100]!r}"
                finally:
                    with contextlib.suppress(Exception):
                        sbx.kill()
            except Exception as exc:
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
            time.sleep(3)
        if SOAK.stop.is_set() and time.monotonic() - t0 < limit_s:
            return f"recovery probe cut short by the end of the run ({last or 'no attempt failed'})"
        SOAK.violate(f"no recovery from the {name} fault within {limit_s:.0f} s: {last}")
        return f"NOT recovered within {limit_s:.0f} s ({last})"

    def run_faults(self, end: float) -> None:
        order: list[str] = []
        short = end - time.monotonic() < 10 * 60   # the 3-minute run fits every kind of fault
        while not SOAK.stop.is_set():
            gap = self.rng.uniform(8, 16) if short else self.rng.uniform(30, 90)
            # a fault, its window and the recovery probe fit before the end
            if SOAK.stop.wait(gap) or time.monotonic() > end - (45 if short else 120):
                return
            if not order:
                order = list(self.faults)
                self.rng.shuffle(order)
            name = order.pop()
            log(f"fault: {name} …")
            try:
                if name == "kill":
                    what = self.fault_kill()
                elif name == "criu":
                    what = self.fault_criu(self.rng.uniform(8, 15) if short else self.rng.uniform(15, 40))
                elif name == "disk":
                    what = self.fault_disk(self.rng.uniform(8, 15) if short else self.rng.uniform(15, 40))
                else:
                    what = self.fault_lxcfs()
                what += "; " + self.probe(name)
                SOAK.set_fault("lxcfs", False)
            except Exception as exc:
                what = f"injector error: {exc!r}"
                SOAK.violate(f"fault {name} could not be injected or recovered from: {traceback.format_exc()[-600:]}")
                SOAK.faults.clear()
            with SOAK.lock:
                SOAK.fault_log.append((time.time(), name, what))
            log(f"fault: {name}: {what}")

    def sample_rss(self) -> None:
        while not SOAK.stop.wait(2):
            pid = self.server_pid()
            if pid is None:
                continue
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
                        with SOAK.lock:
                            SOAK.rss_peak_kb = max(SOAK.rss_peak_kb, kb)

    # -- the leak checks (after the final reset)
    def leaks(self) -> list[str]:
        inst = self.server.instance
        found = []
        roots = (str(self.data_dir) + "/", str(self.workdir / "run") + "/")
        lxcfs_mount = str(self.data_dir / "lxcfs")
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mnt = line.split()[4]
            if mnt.startswith(roots) and mnt != lxcfs_mount:
                found.append(f"mount {mnt}")
        for hier in Path("/sys/fs/cgroup").iterdir():
            parent = hier / inst
            if parent.is_dir():
                kids = [p.name for p in parent.iterdir() if p.is_dir()]
                found.append(f"cgroup {parent} ({len(kids)} sandboxes)")
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
        found += [f"netns {n.split()[0]}" for n in netns if n.startswith(inst)]
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
        found += [f"link {ln.split(':')[1].strip()}" for ln in links if ln.split(":")[1].strip().startswith(inst)]
        if inst in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.split():
            found.append(f"nft table {inst}")
        me = os.getpid()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if (str(self.data_dir) in cmd or str(self.workdir) in cmd) and "lxcfs" not in cmd.split(" ")[0]:
                    found.append(f"process {proc.name}: {cmd[:160]}")
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
        found += [f"loop {ln[:160]}" for ln in loops if str(self.data_dir) + "/" in ln]
        return found


# --------------------------------------------------------------------------- checks

def list_sandboxes(state: str) -> dict[str, dict]:
    r = api("GET", f"/v2/sandboxes?state={state}&limit=100")
    if r.status_code != 200:
        raise RuntimeError(f"GET /v2/sandboxes?state={state} → {r.status_code} {r.text[:200]}")
    return {item["sandboxID"]: item for item in r.json()}


def check_paused(expected: dict[str, str], when: str) -> None:
    """Every sandbox whose pause answered 204 (and was not resumed or killed since) is listed as paused."""
    listed = list_sandboxes("paused")
    with SOAK.lock:
        still = {sid for sid in expected if sid in SOAK.paused and sid not in SOAK.busy}
    for sid in sorted(still - set(listed)):
        SOAK.violate(f"paused sandbox {sid} not listed as paused {when}")
    log(f"check: {len(still & set(listed))}/{len(still)} paused sandboxes listed {when}")


def check_no_stuck_states() -> None:
    for state in ("running", "paused"):
        for sid, item in list_sandboxes(state).items():
            if item.get("state") not in ("running", "paused"):
                SOAK.find(f"sandbox {sid} listed in state {item.get('state')!r} after a restart")


def final_checks() -> None:
    """Resume every paused sandbox (its file must be there), then kill everything the soak made."""
    from e2b import Sandbox

    check_paused(dict(SOAK.paused), "at the end")
    for sid, tok in sorted(SOAK.paused.items()):
        try:
            sbx = Sandbox.connect(sid, timeout=120)
            got = sbx.files.read("/home/user/soak.txt")
            if got != tok:
                SOAK.violate(f"paused sandbox {sid} resumed without its marker: {got[:100]!r}")
        except Exception as exc:
            SOAK.violate(f"paused sandbox {sid} does not resume at the end: {type(exc).__name__}: {str(exc)[:200]}")
    log(f"check: {len(SOAK.paused)} paused sandboxes resumed with their files at the end")
    for state in ("running", "paused"):
        for sid in list_sandboxes(state):
            r = api("DELETE", f"/sandboxes/{sid}")
            if r.status_code not in (204, 404):
                SOAK.find(f"kill {sid} at the end → {r.status_code} {r.text[:200]}")
    for snap in sorted(SOAK.snapshots):
        api("DELETE", f"/templates/{snap}")
    for tpl in sorted(SOAK.templates):
        api("DELETE", f"/templates/{tpl}")


# --------------------------------------------------------------------------- report

def report(host: Host, args: argparse.Namespace, started: float, leaks: list[str]) -> bool:
    print("\n==== soak report ====")
    print(f"{args.minutes} min, {args.workers} workers, faults {','.join(host.faults) or 'none'}, seed {args.seed}, "
          f"ran {(time.time() - started) / 60:.1f} min")
    print("faults injected:")
    for ts, name, what in SOAK.fault_log:
        if what not in ("on", "off"):
            print(f"  {time.strftime('%H:%M:%S', time.localtime(ts))} {name}: {what}")
    print("operations:")
    for key, n in sorted(SOAK.outcomes.items()):
        print(f"  {n:6d}  {key}")
    print("latency of successful operations outside fault windows (ms):")
    floor = sorted(SOAK.latencies.get("floor", [])) or [0.0]
    inside = sorted(SOAK.latencies.get("in-sandbox bash -c true", [])) or [0.0]
    print(f"  floor: commands.run('true') p50={percentile(floor, 0.5):.0f}; "
          f"in-sandbox `bash -c true` p50={percentile(inside, 0.5):.1f}")
    over = []
    for op, samples in sorted(SOAK.latencies.items()):
        s = sorted(samples)
        bound = BOUNDS_MS.get(op)
        p99 = percentile(s, 0.99)
        print(f"  {op:<24} n={len(s):5d} p50={percentile(s, 0.5):8.1f} p95={percentile(s, 0.95):8.1f} "
              f"p99={p99:8.1f} max={s[-1]:8.1f}" + (f"  (bound {bound})" if bound else ""))
        if bound and p99 > bound and not args.no_latency_bounds:
            over.append(f"p99 of {op} {p99:.0f} ms over its bound {bound} ms")
    print(f"peak server RSS: {SOAK.rss_peak_kb / 1024:.0f} MiB")
    errors = {k: v for k, v in SOAK.statuses.items() if int(k.split()[0]) >= 400}
    print("error answers (all well-formed unless listed below):")
    for key, n in sorted(errors.items()):
        print(f"  {n:6d}  {key}")
    for msg in over:
        SOAK.violate(msg)
    for leak in leaks:
        SOAK.violate(f"leaked after reset: {leak}")
    for title, book in (("findings (not invariants)", SOAK.findings), ("invariant violations", SOAK.violations)):
        print(f"{title}: {sum(n for _, n in book.values())}")
        for msg, n in book.values():
            print(f"  - {n}x {msg}")
    held = not SOAK.violations
    print("RESULT:", "all invariants held" if held else "INVARIANTS BROKEN")
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default="all", help="all, none, or a comma list of " + ",".join(FAULTS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-builds", action="store_true", help="leave template builds out of the mix")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log) afterwards")
    parser.add_argument("--no-latency-bounds", action="store_true",
                        help="print the p99s without checking them against BOUNDS_MS (tests assert no timings)")
    args = parser.parse_args(argv)
    faults = [] if args.faults == "none" else list(FAULTS) if args.faults == "all" else args.faults.split(",")
    if unknown := set(faults) - set(FAULTS):
        parser.error(f"unknown faults: {sorted(unknown)}")
    if os.environ.get("SANDLOT_DATA_DIR") and "disk" in faults:
        log("SANDLOT_DATA_DIR is set: that data dir isn't ours to fill, the disk fault is left out")
        faults.remove("disk")

    from tests.e2e.server import sdk_pointed_at

    install_observer()
    workdir = Path(tempfile.mkdtemp(prefix="sandlot-soak-"))
    workdir.chmod(0o711)   # sandboxes' root (a user namespace's) must get through to the data dir
    host = Host(workdir, args.seed, faults)
    started = time.time()
    leaks: list[str] = []
    ok = reset = False
    try:
        host.prepare()
        host.start()
        log(f"server {host.server.url} (instance {host.server.instance}, data dir {host.data_dir}); "
            f"soaking {args.minutes} min with {args.workers} workers, faults {faults or 'none'}")
        end = time.monotonic() + args.minutes * 60
        with sdk_pointed_at(host.server):
            workers = [Worker(i, random.Random(args.seed * 1000 + i), build=not args.no_builds)
                       for i in range(args.workers)]
            threads: list[threading.Thread] = [*workers, threading.Thread(target=host.sample_rss, daemon=True)]
            if faults:
                threads.append(threading.Thread(target=host.run_faults, args=(end,), daemon=True))
            for t in threads:
                t.start()
            while time.monotonic() < end:
                time.sleep(1)
            SOAK.stop.set()
            for w in workers:
                w.join(timeout=300)
                if w.is_alive():
                    SOAK.violate(f"{w.name} still busy 5 minutes after the end (a hung call)")
            for t in threads[len(workers):]:
                t.join(timeout=120)
            SOAK.faults.clear()
            if host.server_pid() is None:
                host.restart()
            final_checks()
        host.server.reset()
        reset = True
        for _ in range(10):   # the kernel drops a veth a moment after its netns
            time.sleep(1)
            if not (leaks := host.leaks()):
                break
        ok = report(host, args, started, leaks)
    except Exception:
        traceback.print_exc()
        print("\nserver log tail:\n" + host.server.log_tail(80))
    finally:
        if not reset:   # also on ^C: no sandbox of ours outlives the bench
            SOAK.stop.set()
            with contextlib.suppress(Exception):
                host.server.reset()
        host.teardown()
        if args.keep or not ok:
            print(f"(kept {workdir}: server.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
