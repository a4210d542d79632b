"""GET /metrics: shape, sane values and a real (sampled) CPU percentage."""

from __future__ import annotations

import os
import time

import httpx

from sandlot.envd import metrics as m

KEYS = {"ts", "cpu_count", "cpu_used_pct", "mem_total", "mem_used", "mem_cache", "mem_total_mib",
        "mem_used_mib", "disk_used", "disk_total"}


def test_metrics_shape_and_values(envd):
    r = httpx.get(envd.url + "/metrics")
    assert r.status_code == 200
    j = r.json()
    assert set(j) == KEYS
    assert abs(j["ts"] - time.time()) < 5
    assert 1 <= j["cpu_count"] <= (os.cpu_count() or 1)
    assert isinstance(j["cpu_used_pct"], float) and 0.0 <= j["cpu_used_pct"] <= 100.0
    assert 0 < j["mem_used"] <= j["mem_total"] and j["mem_total_mib"] == j["mem_total"] >> 20
    st = os.statvfs("/")
    assert j["disk_total"] == st.f_blocks * st.f_frsize and 0 < j["disk_used"] <= j["disk_total"]


def test_metrics_require_token(envd_token):
    assert httpx.get(envd_token.url + "/metrics").status_code == 401
    assert httpx.get(envd_token.url + "/metrics", headers={"X-Access-Token": "tok-secret-123"}).status_code == 200


def test_cpu_pct_sees_a_busy_loop(sbx, envd):
    h = sbx.commands.run("timeout 3 sh -c 'while :; do :; done'", background=True)
    try:
        time.sleep(0.5)
        pct = max(httpx.get(envd.url + "/metrics").json()["cpu_used_pct"] for _ in range(3))
        ncpu = httpx.get(envd.url + "/metrics").json()["cpu_count"]
        assert pct >= 100 / ncpu * 0.5, pct  # one spinning core
    finally:
        sbx.commands.kill(h.pid)


def test_cgroup_v1_files_are_used(tmp_path, monkeypatch):
    mem = tmp_path / "memory"
    mem.mkdir()
    (mem / "memory.usage_in_bytes").write_text("300000000\n")
    (mem / "memory.limit_in_bytes").write_text("536870912\n")
    (mem / "memory.stat").write_text("cache 50000000\ntotal_cache 60000000\ntotal_inactive_file 100000000\n")
    monkeypatch.setattr(m, "CG", str(tmp_path))
    assert m.memory() == (536870912, 200000000, 60000000)
