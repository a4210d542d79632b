"""host_limits: host ceilings only go up; sandboxes get the server's hard limits."""

from __future__ import annotations

import resource
from pathlib import Path

from sandlot.runtime import host_limits


def _proc_sys(tmp_path: Path, values: dict[str, str]) -> Path:
    for key, value in values.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(value + "\n")
    return tmp_path


def test_low_ceilings_are_raised_high_ones_kept(tmp_path: Path) -> None:
    root = _proc_sys(tmp_path, {"fs/inotify/max_user_instances": "128", "fs/inotify/max_user_watches": "192536",
                                "fs/file-max": str(2**63 - 1), "kernel/pid_max": "32768"})
    changed = host_limits.raise_host_limits(root)
    assert changed == {"fs/inotify/max_user_instances": 2**31 - 1, "fs/inotify/max_user_watches": 2**31 - 1,
                       "kernel/pid_max": 4_194_304}
    assert (root / "fs/inotify/max_user_instances").read_text() == str(2**31 - 1)
    assert (root / "fs/file-max").read_text().strip() == str(2**63 - 1)     # untouched
    assert host_limits.raise_host_limits(root) == {}                        # idempotent


def test_a_missing_or_unwritable_knob_is_not_fatal(tmp_path: Path) -> None:
    assert host_limits.raise_host_limits(tmp_path / "nothing-here") == {}


def test_sandbox_rlimits_are_the_servers_hard_limits() -> None:
    limits = {r["type"]: r for r in host_limits.sandbox_rlimits(4096)}
    assert limits["RLIMIT_NOFILE"] == {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}
    for name, which in host_limits.SHARED_RLIMITS.items():
        hard = resource.getrlimit(which)[1]
        expected = 2**64 - 1 if hard == resource.RLIM_INFINITY else hard
        assert limits[name]["hard"] == limits[name]["soft"] == expected
