"""``scripts/local-cluster.sh`` driven from tests and benches: up, the SDK environment, the admin
view, node kills and restarts, down."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests import postgres
from tests.e2e.server import REPO, SANDLOT, SDK_VARS, sdk_environment

SCRIPT = REPO / "scripts" / "local-cluster.sh"


def unavailable() -> str | None:
    """Why a local cluster can't run in this checkout, or None."""
    if reason := postgres.available():
        return reason
    for command in ("node", "api"):
        if subprocess.run([str(SANDLOT), command, "--help"], capture_output=True, timeout=60).returncode != 0:
            return f"`sandlot {command}` is not in this checkout yet (issue 17: the lead builds the tiers)"
    return None


@dataclass
class LocalCluster:
    """One ``local-cluster.sh`` cluster in ``root`` (its ``SANDLOT_CLUSTER_DIR``)."""

    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    env_line: dict[str, str] = field(default_factory=dict)

    def _run(self, *args: str, timeout: float = 600) -> str:
        env = dict(os.environ, SANDLOT_CLUSTER_DIR=str(self.root), **self.extra_env)
        for name in SDK_VARS:
            env.pop(name, None)
        done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"local-cluster.sh {' '.join(args)} failed:\n{done.stderr[-4000:]}")
        return done.stdout

    def up(self, nodes: int) -> None:
        last = self._run("up", str(nodes)).strip().splitlines()[-1]
        self.env_line = dict(item.split("=", 1) for item in last.split(" "))
        # issue 17: the last line is exactly these four, in this order
        assert list(self.env_line) == ["E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "SANDLOT_ADMIN_TOKEN"], last

    def down(self) -> None:
        if (self.root / "state.json").exists():
            self._run("down")

    def kill_node(self, number: int) -> None:
        self._run("kill-node", str(number))

    def stop_node(self, number: int) -> None:
        self._run("stop-node", str(number))

    def start_node(self, number: int) -> None:
        self._run("start-node", str(number))

    @property
    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "state.json").read_text()))

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{api['port']}" for api in self.state["apis"]]

    @property
    def api_key(self) -> str:
        return self.env_line["E2B_API_KEY"]

    def sdk_opts(self, api: int = 0) -> dict[str, str]:
        """``Sandbox.create/connect`` keyword arguments aimed at API instance ``api``."""
        url = self.api_urls[api]
        return {"api_key": self.api_key, "api_url": url, "sandbox_url": url}

    def admin(self, api: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.api_urls[api], timeout=30,
                            headers={"X-Admin-Token": self.env_line["SANDLOT_ADMIN_TOKEN"]})

    def nodes(self) -> dict[str, dict[str, Any]]:
        with self.admin() as ops:
            answer = ops.get("/nodes")
        answer.raise_for_status()
        return {n["nodeID"]: n for n in answer.json()}

    def node_of(self, sandbox_id: str) -> str | None:
        """The node whose admin detail lists the sandbox (E2B's ``GET /nodes/{nodeID}``)."""
        with self.admin() as ops:
            for node_id in self.nodes():
                detail = ops.get(f"/nodes/{node_id}")
                if detail.status_code == 200 and sandbox_id in {s["sandboxID"] for s in detail.json()["sandboxes"]}:
                    return node_id
        return None

    def node_number(self, node_id: str) -> int:
        return 1 + [n["node_id"] for n in self.state["nodes"]].index(node_id)

    def node(self, node_id: str) -> dict[str, Any]:
        return next(n for n in self.state["nodes"] if n["node_id"] == node_id)

    def traces(self, node_id: str) -> dict[str, list[str]]:
        """Host resources of a node's instance a sandbox could leak (containers, mounts, cgroups,
        sandbox dirs), as ``tests/e2e/test_restart_and_faults.py`` counts them for one server."""
        node = self.node(node_id)
        instance = node["instance"]
        runc_root = Path(node["run_dir"]) / "runc"
        sandboxes_dir = Path(node["data_dir"]) / "runtime" / instance / "sandboxes"
        mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines()
                  if f"/runtime/{instance}/" in line]
        cgroups = []
        for controller in ("memory", "pids", "cpu", "freezer"):
            base = Path("/sys/fs/cgroup") / controller / instance
            if base.exists():
                cgroups += [f"{controller}/{p.name}" for p in base.iterdir() if p.is_dir()]
        return {
            "containers": sorted(p.name for p in runc_root.iterdir()) if runc_root.exists() else [],
            "mounts": mounts,
            "cgroups": cgroups,
            "dirs": sorted(p.name for p in sandboxes_dir.iterdir()) if sandboxes_dir.exists() else [],
        }

    def netns(self, node_id: str) -> set[str]:
        instance = self.node(node_id)["instance"]
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return {line.split()[0] for line in out.splitlines() if line.startswith(f"{instance}-")}


def wait_until(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextlib.contextmanager
def running_cluster(nodes: int = 3, extra_env: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """``up`` a cluster for the block (the SDK's environment aimed at API instance 1), ``down`` after.
    Its dir is in /tmp (0711), not pytest's 0700 tmp: sandboxes' root (a user-namespace uid) must
    traverse to the node data dirs below it."""
    top = Path(tempfile.mkdtemp(prefix="sandlot-cluster-"))
    top.chmod(0o711)
    cluster = LocalCluster(root=top / "c", extra_env=extra_env or {})
    try:
        cluster.up(nodes)
        with sdk_environment({k: v for k, v in cluster.env_line.items() if k.startswith("E2B_")}):
            yield cluster
    finally:
        try:
            cluster.down()
        finally:
            shutil.rmtree(top, ignore_errors=True)
