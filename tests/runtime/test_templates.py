"""Checks of the built base template rootfs and the envd runtime tree (built once, cached)."""
from __future__ import annotations

import os
import subprocess

from sandlot.runtime.envd_bundle import app_dir, loader_path
from sandlot.templates.base import build_base_rootfs, is_built


def test_base_rootfs_contents(base_rootfs):
    assert is_built(base_rootfs)
    assert build_base_rootfs(base_rootfs, progress=lambda s: None) == base_rootfs  # idempotent, no rebuild
    passwd = (base_rootfs / "etc/passwd").read_text()
    assert "user:x:1000:1000::/home/user:/bin/bash" in passwd
    assert (base_rootfs / "home/user").is_dir()
    st = os.stat(base_rootfs / "home/user")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    sudoers = base_rootfs / "etc/sudoers.d/user"
    assert "NOPASSWD: ALL" in sudoers.read_text()
    assert oct(sudoers.stat().st_mode & 0o777) == "0o440"
    for tool in ("bash", "python3", "pip3", "git", "curl", "sudo", "ps", "ip", "less", "nano"):
        assert any((base_rootfs / d / tool).exists() for d in ("usr/bin", "bin", "usr/sbin", "sbin")), tool
    assert not (base_rootfs / "etc/hostname").exists()
    assert not list((base_rootfs / "usr/share/man").glob("man1/*")) if (base_rootfs / "usr/share/man").exists() else True
    r = subprocess.run(["chroot", str(base_rootfs), "python3", "-c", "import venv, ensurepip, ssl; print('ok')"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


def test_envd_runtime_tree(envd_runtime):
    assert loader_path(envd_runtime) in ("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                                         "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert (envd_runtime / "lib64/ld-linux-x86-64.so.2").exists()   # relative symlink resolves
    for dirpath, dirnames, filenames in os.walk(envd_runtime):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                assert not os.readlink(p).startswith("/"), p
    assert list((envd_runtime / "usr/lib/python3.11/__pycache__").glob("os.cpython-311.pyc"))
    assert (app_dir(envd_runtime) / "sandlot/__init__.py").exists()
    assert list((app_dir(envd_runtime) / "sandlot/envd/__pycache__").glob("server.cpython-311.pyc"))
    assert (envd_runtime / "opt/envd/site/uvicorn").is_dir()
