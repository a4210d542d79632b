"""envd's own footprint: start-up, idle memory, CPU per command — a bare envd, no sandbox.

Starts envd the way a sandbox does (the envd runtime's own loader, Python and site from the
data dir's ``envd/runtime``), but on the host with the code of ``--code`` (default: this
checkout; point it at an older tree to compare), and prints, p50 over ``--starts`` starts:

* start-up: exec to the first ``/health`` 204 (wall), and envd's ``utime + stime`` then (CPU —
  holds up on a loaded machine where wall times don't);
* private memory (USS), PSS and RSS from ``smaps_rollup`` after one upload and one command;
* envd's CPU per ``commands.run("true")`` from the unmodified SDK over ``--commands`` commands
  (the floor would be 0: it is envd's overhead alone).

Usage (as root, after ``make setup``):
    .venv/bin/python bench/envd_footprint.py [--code DIR] [--starts 3] [--commands 200]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_mib(pid: int) -> dict[str, float]:
    got: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            got[key] = int(value.split()[0]) / 1024
    return {"uss": got["Private_Clean"] + got["Private_Dirty"], "pss": got["Pss"], "rss": got["Rss"]}


class BareEnvd:
    def __init__(self, runtime: Path, code: Path, helper: str | None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"PYTHONHOME": f"{runtime}/usr", "PYTHONPATH": f"{code}:{runtime}/opt/envd/site",
               "PATH": "/usr/local/bin:/usr/bin:/bin",  # bytecode is written: the first start is a warm-up
               "SANDLOT_ENVD_PORT": str(self.port), "SANDLOT_ENVD_HOST": "127.0.0.1",
               "SANDLOT_ENVD_INIT": json.dumps({"defaultUser": "root"})}
        if helper:
            env["SANDLOT_ENVD_SPAWN_HELPER"] = helper
        libs = f"{runtime}/lib/x86_64-linux-gnu:{runtime}/usr/lib/x86_64-linux-gnu"
        argv = [f"{runtime}/lib64/ld-linux-x86-64.so.2", "--library-path", libs,
                f"{runtime}/usr/bin/python3.11", "-s", "-m", "sandlot.envd"]
        started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd="/")
        import httpx

        while True:
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 204:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit("envd did not start")
            time.sleep(0.005)
        self.start_wall_ms = (time.monotonic() - started) * 1000
        self.start_cpu_ms = _cpu_s(self.proc.pid) * 1000

    def exercise(self, scratch: str) -> None:
        import httpx

        httpx.post(self.url + "/files", params={"path": scratch}, content=b"x" * 1024,
                   headers={"content-type": "application/octet-stream"}).raise_for_status()
        body = json.dumps({"process": {"cmd": "/bin/true"}}).encode()
        httpx.post(self.url + "/process.Process/Start", content=b"\0" + struct.pack(">I", len(body)) + body,
                   headers={"content-type": "application/connect+json"}).raise_for_status()
        time.sleep(0.3)

    def command_cpu_ms(self, n: int) -> float:
        from e2b import ConnectionConfig
        from e2b.sandbox_sync.main import Sandbox
        from packaging.version import Version

        cfg = ConnectionConfig(sandbox_url=self.url, api_key="e2b_00")
        sbx = Sandbox(sandbox_id="bench", sandbox_domain=None, envd_version=Version("0.6.13"),
                      envd_access_token=None, connection_config=cfg)
        for _ in range(10):
            sbx.commands.run("true")
        before = _cpu_s(self.proc.pid)
        for _ in range(n):
            sbx.commands.run("true")
        return (_cpu_s(self.proc.pid) - before) / n * 1000

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def main() -> None:
    from sandlot.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=REPO, help="tree whose sandlot/envd runs (PYTHONPATH)")
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--commands", type=int, default=200)
    args = ap.parse_args()
    runtime = Settings().envd_runtime_dir
    from sandlot.runtime.envd_bundle import build_spawn_helper

    workdir = tempfile.mkdtemp(prefix="envd-footprint-")
    helper = Path(workdir) / "spawnhelper"
    helper_path = str(helper) if (args.code / "sandlot/envd/spawn_helper.c").exists() and build_spawn_helper(helper) \
        else None
    rows = []
    try:
        for i in range(args.starts + 1):  # the first writes --code's bytecode, and is not counted
            envd = BareEnvd(runtime, args.code, helper_path)
            try:
                envd.exercise(f"{workdir}/scratch")
                mem = _memory_mib(envd.proc.pid)
                cpu = envd.command_cpu_ms(args.commands) if i == 1 and args.commands else None
                if i:
                    rows.append((envd.start_wall_ms, envd.start_cpu_ms, mem, cpu))
            finally:
                envd.stop()
    finally:
        subprocess.run(["rm", "-rf", workdir], check=False)

    def p50(values: list[float]) -> float:
        return statistics.median(values)

    print(f"envd of {args.code} (spawn helper: {'yes' if helper_path else 'no'}), load {os.getloadavg()[0]:.1f}")
    print(f"  start-up to /health   wall p50 {p50([r[0] for r in rows]):.0f} ms, CPU p50 {p50([r[1] for r in rows]):.0f} ms")
    print(f"  idle memory           USS {p50([r[2]['uss'] for r in rows]):.1f} MiB, "
          f"PSS {p50([r[2]['pss'] for r in rows]):.1f} MiB, RSS {p50([r[2]['rss'] for r in rows]):.1f} MiB")
    if rows and rows[0][3] is not None:
        print(f"  envd CPU per commands.run('true')  {rows[0][3]:.2f} ms over {args.commands}")


if __name__ == "__main__":
    main()
