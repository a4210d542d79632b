"""``scripts/local_cluster.py`` without starting anything: the host NAT stays in the cluster's own
nft table, each node's environment is its own (nothing of the caller's store, instance or data
dir leaks in), the keys every node gets are the same ones Sandlot loads, the SDK line has exactly
issue 17's four variables, and ``up`` refuses a second cluster on a recorded one (before touching
the host)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local_cluster.py"


@pytest.fixture(scope="module")
def lc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_cluster", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_cluster"] = module
    spec.loader.exec_module(module)
    return module


def _state(tmp_path: Path) -> dict[str, Any]:
    nodes = [{
        "node_id": f"node-{i}", "netns": f"sandlot-abc-n{i}", "host_veth": f"lcabch{i}", "node_veth": f"lcabcn{i}",
        "link_subnet": f"10.250.{i}.0/24", "host_ip": f"10.250.{i}.1", "node_ip": f"10.250.{i}.2",
        "instance": f"kabcn{i}", "sandbox_subnet": f"10.22{i}.0.0/16", "dir": str(tmp_path / f"n{i}"),
        "data_dir": str(tmp_path / f"n{i}" / "data"), "run_dir": str(tmp_path / f"n{i}" / "run"), "pid": None,
    } for i in (1, 2)]
    return {
        "root": str(tmp_path), "cluster_id": "abc", "images_dir": str(tmp_path / "images"), "nft_table": "sandlot_lc_abc",
        "node_command": "node", "api_command": "api", "api_key": "e2b_" + "0" * 40, "admin_token": "adm",
        "node_token": "tok", "nodes": nodes, "postgres": {"port": 5999, "password": "pw", "root": "/x"},
        "apis": [{"port": 4001, "data_dir": str(tmp_path / "a1"), "instance": "kabca1"}],
    }


def test_nat_rules_live_in_the_clusters_own_table(lc: ModuleType, tmp_path: Path) -> None:
    state = _state(tmp_path)
    rules = lc.nft_rules(state["nft_table"], state["nodes"])
    assert rules.count("table ") == 1 and rules.startswith("table inet sandlot_lc_abc {")
    assert "ip saddr { 10.250.1.0/24, 10.250.2.0/24 }" in rules and "masquerade" in rules
    assert '"lcabch1", "lcabch2"' in rules


def test_node_environment_is_the_nodes_own(lc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("SANDLOT_DATABASE_URL", "sqlite:////elsewhere.db"), ("SANDLOT_INSTANCE", "mine"),
                        ("SANDLOT_DATA_DIR", "/srv/other"), ("SANDLOT_WARM_POOL_SIZE", "0")):
        monkeypatch.setenv(name, value)
    state = _state(tmp_path)
    env = lc.node_env(state, state["nodes"][1])
    assert env["SANDLOT_DATABASE_URL"] == "postgresql+psycopg://sandlot:pw@10.250.2.1:5999/sandlot"
    assert env["SANDLOT_INSTANCE"] == "kabcn2" and env["SANDLOT_SANDBOX_SUBNET"] == "10.222.0.0/16"
    assert env["SANDLOT_DATA_DIR"] == str(tmp_path / "n2" / "data")
    assert env["SANDLOT_RUNTIME_STATE_DIR"] == str(tmp_path / "n2" / "run")
    assert env["SANDLOT_NODE_ADDRESS"] == "10.250.2.2:3000" and env["SANDLOT_NODE_HEARTBEAT_S"] == "2"
    assert env["SANDLOT_BLOB_URL"] == f"file://{tmp_path}/blobs" and env["SANDLOT_IMAGES_DIR"] == str(tmp_path / "images")
    assert env["SANDLOT_WARM_POOL_SIZE"] == "0"   # other settings pass through
    api = lc.api_env(state, state["apis"][0])
    assert api["SANDLOT_DATABASE_URL"] == "postgresql+psycopg://sandlot:pw@127.0.0.1:5999/sandlot"
    assert api["SANDLOT_INSTANCE"] == "kabca1" and "SANDLOT_SANDBOX_SUBNET" not in api


def test_env_line_is_exactly_the_four_variables(lc: ModuleType, tmp_path: Path) -> None:
    line = lc.env_line(_state(tmp_path))
    assert [item.split("=", 1)[0] for item in line.split(" ")] == [
        "E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "SANDLOT_ADMIN_TOKEN"]
    assert line.startswith("E2B_API_URL=http://127.0.0.1:4001 E2B_SANDBOX_URL=http://127.0.0.1:4001 ")


def test_shared_keys_are_the_ones_sandlot_loads(lc: ModuleType, tmp_path: Path) -> None:
    from sandlot.egress.ca import EgressCA
    from sandlot.secret_keys import data_dir_key

    seed = lc.shared_seed(tmp_path)
    one, two = tmp_path / "d1", tmp_path / "d2"
    lc.seed_data_dir(seed, one)
    lc.seed_data_dir(seed, two)
    for name in lc.SHARED_KEYS:
        assert data_dir_key(one, name) == data_dir_key(two, name)
    assert EgressCA(one, None).cert_pem == EgressCA(two, None).cert_pem
    assert sorted(p.name for p in (seed / "egress-ca").iterdir()) == sorted(lc.SHARED_CA_FILES)


def test_up_refuses_a_recorded_cluster(lc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if lc.os.geteuid() != 0:
        pytest.skip("up checks root first")
    monkeypatch.setenv("SANDLOT_CLUSTER_DIR", str(tmp_path))
    (tmp_path / "state.json").write_text(json.dumps(_state(tmp_path)))
    with pytest.raises(lc.ClusterError, match="already up"):
        lc.up(2)
