"""OOM-killer tiers: user processes (1000) > envd (server + 100) > the server (docs/reliability.md)."""
from __future__ import annotations

from sandlot.envd.processes import USER_OOM_SCORE_ADJ
from sandlot.runtime import oom
from sandlot.runtime.bundle import oci_config
from sandlot.runtime.base import SandboxSpec


def test_envd_sits_between_the_server_and_user_processes() -> None:
    own = oom.own_score_adj()
    init = oom.init_score_adj(-900)   # runc's old wish: lowering is never needed now
    assert own < init < USER_OOM_SCORE_ADJ
    assert init == min(oom.INIT_MAX, own + oom.INIT_ABOVE_SERVER)
    assert oom.init_score_adj(950) == oom.INIT_MAX   # never ties with its own children


def test_the_bundle_carries_the_init_tier() -> None:
    spec = SandboxSpec(sandbox_id="iunit", layers=[], cpu_count=1, memory_mb=256, pids_limit=64,
                       args=["/bin/true"], env={}, mounts=[], hostname="h")
    cfg = oci_config(spec, rootfs="/r", netns_path="/n", cgroups_path="/c", seccomp_filter=False)
    assert cfg["process"]["oomScoreAdj"] == oom.init_score_adj(-900)


def test_protecting_the_server_never_raises_its_score() -> None:
    before = oom.own_score_adj()
    assert oom.protect_server() <= before   # lowered with CAP_SYS_RESOURCE, unchanged without
