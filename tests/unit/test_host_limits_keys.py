"""host_limits: the kernel key quota no longer caps how many sandboxes a host runs.

runc gives every container a session keyring, charged to the host uid that sandbox root maps
to (one uid for all sandboxes under user namespaces); Debian's 200 keys / 20000 bytes made
creates fail with EDQUOT at ~200 sandboxes (bench/density.py). Tenants can't add keys of
their own (seccomp: tests/security/test_syscalls.py), so the raised quota is one key each.
"""

from __future__ import annotations

from pathlib import Path

from sandlot.runtime import host_limits


def test_debian_key_quota_is_raised_to_roots(tmp_path: Path) -> None:
    for key, value in {"kernel/keys/maxkeys": "200", "kernel/keys/maxbytes": "20000"}.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(value + "\n")
    changed = host_limits.raise_host_limits(tmp_path)
    assert changed == {"kernel/keys/maxkeys": 1_000_000, "kernel/keys/maxbytes": 25_000_000}
    assert (tmp_path / "kernel/keys/maxkeys").read_text() == "1000000"
    assert (tmp_path / "kernel/keys/maxbytes").read_text() == "25000000"


def test_a_higher_key_quota_is_kept(tmp_path: Path) -> None:
    (tmp_path / "kernel/keys").mkdir(parents=True)
    (tmp_path / "kernel/keys/maxkeys").write_text("5000000\n")
    assert host_limits.raise_host_limits(tmp_path) == {}
    assert (tmp_path / "kernel/keys/maxkeys").read_text().strip() == "5000000"
